//! Server-Sent Events: encoding for the front door, incremental decoding for upstreams.

use bytes::Bytes;

/// One `message` event carrying `data` (split over `data:` lines if it has line breaks).
pub fn encode_event(data: &str, id: Option<&str>) -> Bytes {
    let mut out = String::with_capacity(data.len() + 32);
    out.push_str("event: message\n");
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

/// A decoded event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    pub event: Option<String>,
    pub id: Option<String>,
    pub data: String,
}

/// The longest line, and the largest event's data, a decoder holds by default: an
/// upstream that streams more without ending it is cut off, not buffered without limit.
pub const MAX_EVENT_BYTES: usize = crate::upstream::MAX_UPSTREAM_MESSAGE;

/// Decodes an SSE byte stream chunk by chunk (WHATWG HTML, "event stream interpretation").
#[derive(Debug)]
pub struct Decoder {
    buffer: Vec<u8>,
    current: Event,
    has_data: bool,
    limit: usize,
    overflowed: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::with_limit(MAX_EVENT_BYTES)
    }
}

impl Decoder {
    /// A decoder that holds at most `limit` bytes of one line or one event's data.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            buffer: Vec::new(),
            current: Event::default(),
            has_data: false,
            limit,
            overflowed: false,
        }
    }

    /// Whether the stream passed the limit: what it was sending is dropped, and the
    /// stream should be given up.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Feeds a chunk and returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Event> {
        if self.overflowed {
            return Vec::new();
        }
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n' || b == b'\r') {
            // A CR at the very end may be the first half of CRLF: wait for more input.
            if self.buffer.get(end) == Some(&b'\r') && end + 1 == self.buffer.len() {
                break;
            }
            let skip = if self.buffer.get(end) == Some(&b'\r')
                && self.buffer.get(end + 1) == Some(&b'\n')
            {
                2
            } else {
                1
            };
            let line: Vec<u8> = self.buffer.drain(..end + skip).take(end).collect();
            if let Some(event) = self.line(&String::from_utf8_lossy(&line)) {
                events.push(event);
            }
        }
        if self.buffer.len() > self.limit || self.current.data.len() > self.limit {
            self.overflowed = true;
            self.buffer = Vec::new();
            self.current = Event::default();
        }
        events
    }

    fn line(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.current);
            let had = std::mem::replace(&mut self.has_data, false);
            return had.then_some(event);
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line
            .split_once(':')
            .map_or((line, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
        match field {
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.current.event = Some(value.to_owned()),
            "id" if !value.contains('\0') => self.current.id = Some(value.to_owned()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_past_the_limit_is_cut_off() {
        let mut decoder = Decoder::with_limit(16);
        assert_eq!(decoder.feed(b"data: short\n\n").len(), 1);
        assert!(decoder.feed(b"data: 0123456789abcdefghij").is_empty());
        assert!(decoder.overflowed());
        assert!(decoder.feed(b"\n\ndata: x\n\n").is_empty(), "nothing after");
        let mut many = Decoder::with_limit(16);
        for _ in 0..4 {
            many.feed(b"data: 0123456789\n");
        }
        assert!(many.overflowed(), "one event's data lines add up");
    }

    #[test]
    fn events_survive_any_chunking_and_line_ending() {
        let stream = b"event: message\r\nid: 1\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n: keepalive\n\ndata: two\n\n";
        for split in 0..stream.len() {
            let mut decoder = Decoder::default();
            let mut events = decoder.feed(&stream[..split]);
            events.extend(decoder.feed(&stream[split..]));
            assert_eq!(events.len(), 2, "split at {split}");
            assert_eq!(events[0].data, "{\"a\":\n1}");
            assert_eq!(events[0].id.as_deref(), Some("1"));
            assert_eq!(events[1].data, "two");
        }
    }

    #[test]
    fn encoded_events_decode_to_the_same_data() {
        let mut decoder = Decoder::default();
        let events = decoder.feed(&encode_event("line one\nline two", Some("7")));
        assert_eq!(
            events,
            vec![Event {
                event: Some("message".into()),
                id: Some("7".into()),
                data: "line one\nline two".into()
            }]
        );
    }
}
