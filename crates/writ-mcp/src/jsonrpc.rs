//! JSON-RPC 2.0 framing as MCP uses it.
//!
//! Incoming bodies are checked in a fixed order — UTF-8, nesting depth, JSON syntax, then
//! the envelope field by field — so each kind of bad input gets its own clear error. The
//! `params`, `result` and `error` members stay as raw JSON text: what Writ does not need to
//! inspect it never re-serialises.

use serde::Deserialize;
use serde_json::value::RawValue;

/// JSON-RPC error codes (JSON-RPC 2.0 §5.1).
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    // Writ's own errors about upstreams sit outside the JSON-RPC reserved range
    // (-32768..-32000), as MCP 2026-07-28 asks of application-defined codes, so they cannot
    // be mistaken for a code the specification or an upstream defines.
    /// Writ could not get an answer from the upstream server in time.
    pub const UPSTREAM_TIMEOUT: i64 = -31001;
    /// The upstream server is down, crashed mid-call, or refused the connection.
    pub const UPSTREAM_UNAVAILABLE: i64 = -31002;
    /// The upstream server answered something that is not a valid MCP message.
    pub const UPSTREAM_BAD_RESPONSE: i64 = -31003;
}

/// A request id: a string or an integer, kept as the exact JSON text the peer sent.
#[derive(Debug, Clone)]
pub struct Id(Box<RawValue>);

impl Id {
    pub fn from_u64(n: u64) -> Self {
        Self(raw(n.to_string()))
    }

    pub fn as_raw(&self) -> &RawValue {
        &self.0
    }

    pub fn as_u64(&self) -> Option<u64> {
        self.0.get().parse().ok()
    }

    fn parse(raw: &RawValue) -> Option<Self> {
        let text = raw.get();
        let is_string = text.starts_with('"');
        let is_integer =
            serde_json::from_str::<i64>(text).is_ok() || serde_json::from_str::<u64>(text).is_ok();
        (is_string || is_integer).then(|| Self(raw.to_owned()))
    }
}

// Ids compare and hash by their JSON text.
impl PartialEq for Id {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Eq for Id {}

impl std::hash::Hash for Id {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.get().hash(state);
    }
}

/// One JSON-RPC message.
#[derive(Debug)]
pub enum Message {
    Request(Request),
    Notification(Notification),
    Response(Response),
}

#[derive(Debug)]
pub struct Request {
    pub id: Id,
    pub method: String,
    pub params: Option<Box<RawValue>>,
}

#[derive(Debug, Clone)]
pub struct Notification {
    pub method: String,
    pub params: Option<Box<RawValue>>,
}

#[derive(Debug)]
pub struct Response {
    pub id: Id,
    /// The raw `result`, or the raw `error` object.
    pub outcome: Result<Box<RawValue>, Box<RawValue>>,
}

/// A body is one message, or a batch (only in revisions that have batches).
#[derive(Debug)]
pub enum Body {
    Single(Message),
    Batch(Vec<Result<Message, FrameError>>),
}

/// Why a body or a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("body is not valid UTF-8")]
    NotUtf8,
    #[error("JSON nests deeper than {max} levels")]
    TooDeep { max: usize },
    #[error("body is not valid JSON: {0}")]
    Malformed(String),
    #[error("{reason}")]
    Invalid { reason: String, id: Option<Id> },
}

impl FrameError {
    /// The JSON-RPC error code for this failure.
    pub fn code(&self) -> i64 {
        match self {
            Self::NotUtf8 | Self::TooDeep { .. } | Self::Malformed(_) => code::PARSE_ERROR,
            Self::Invalid { .. } => code::INVALID_REQUEST,
        }
    }

    /// The id to echo in the error response, when the message had a valid one.
    pub fn id(&self) -> Option<&Id> {
        match self {
            Self::Invalid { id, .. } => id.as_ref(),
            _ => None,
        }
    }

    fn invalid(reason: impl Into<String>, id: Option<Id>) -> Self {
        Self::Invalid {
            reason: reason.into(),
            id,
        }
    }
}

/// Parses one HTTP body into a message or a batch.
pub fn parse_body(bytes: &[u8], max_depth: usize) -> Result<Body, FrameError> {
    let text = std::str::from_utf8(bytes).map_err(|_| FrameError::NotUtf8)?;
    check_depth(text.as_bytes(), max_depth)?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let items: Vec<&RawValue> =
            serde_json::from_str(text).map_err(|e| FrameError::Malformed(e.to_string()))?;
        if items.is_empty() {
            return Err(FrameError::invalid("a batch must not be empty", None));
        }
        Ok(Body::Batch(
            items
                .into_iter()
                .map(|item| parse_message(item.get()))
                .collect(),
        ))
    } else {
        parse_message(text).map(Body::Single)
    }
}

/// Parses one message from JSON text (also used for upstream output, line by line).
pub fn parse_message(text: &str) -> Result<Message, FrameError> {
    let envelope: Envelope<'_> = serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            FrameError::invalid("a JSON-RPC message must be a JSON object", None)
        } else {
            FrameError::Malformed(e.to_string())
        }
    })?;
    envelope.classify()
}

/// Refuses JSON nested deeper than `max` without building anything, so a hostile body
/// cannot exhaust the stack or the parser's recursion limit.
pub fn check_depth(bytes: &[u8], max: usize) -> Result<(), FrameError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(FrameError::TooDeep { max });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Every member as raw text; `null` counts as present so `"id": null` is caught.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    jsonrpc: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    method: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    params: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    error: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

impl Envelope<'_> {
    fn classify(self) -> Result<Message, FrameError> {
        let id = match self.id {
            None => None,
            Some(raw) => Some(Id::parse(raw).ok_or_else(|| {
                FrameError::invalid(
                    format!(
                        "`id` must be a string or an integer, not `{}`",
                        abbreviate(raw.get())
                    ),
                    None,
                )
            })?),
        };
        match self.jsonrpc.map(RawValue::get) {
            Some("\"2.0\"") => {}
            Some(other) => {
                return Err(FrameError::invalid(
                    format!("`jsonrpc` must be \"2.0\", not `{}`", abbreviate(other)),
                    id,
                ));
            }
            None => {
                return Err(FrameError::invalid(
                    "`jsonrpc` is missing; it must be \"2.0\"",
                    id,
                ));
            }
        }
        if let Some(method) = self.method {
            let method: String = serde_json::from_str(method.get()).map_err(|_| {
                FrameError::invalid(
                    format!(
                        "`method` must be a string, not `{}`",
                        abbreviate(method.get())
                    ),
                    id.clone(),
                )
            })?;
            if self.result.is_some() || self.error.is_some() {
                return Err(FrameError::invalid(
                    "a message cannot carry both `method` and `result` or `error`",
                    id,
                ));
            }
            let params = match self.params {
                Some(params) if !params.get().starts_with('{') => {
                    return Err(FrameError::invalid("`params` must be an object", id));
                }
                params => params.map(ToOwned::to_owned),
            };
            return Ok(match id {
                Some(id) => Message::Request(Request { id, method, params }),
                None => Message::Notification(Notification { method, params }),
            });
        }
        let Some(id) = id else {
            return Err(FrameError::invalid(
                "message has neither `method` nor `id`",
                None,
            ));
        };
        let outcome = match (self.result, self.error) {
            (Some(result), None) => Ok(result.to_owned()),
            (None, Some(error)) if error.get().starts_with('{') => Err(error.to_owned()),
            (None, Some(_)) => {
                return Err(FrameError::invalid("`error` must be an object", Some(id)));
            }
            (Some(_), Some(_)) => {
                return Err(FrameError::invalid(
                    "a response cannot carry both `result` and `error`",
                    Some(id),
                ));
            }
            (None, None) => return Err(FrameError::invalid("`method` is missing", Some(id))),
        };
        Ok(Message::Response(Response { id, outcome }))
    }
}

fn abbreviate(text: &str) -> String {
    let mut out: String = text.chars().take(32).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// Wraps owned JSON text that is known to be valid.
fn raw(text: String) -> Box<RawValue> {
    RawValue::from_string(text).unwrap_or_else(|_| null())
}

/// The JSON `null`.
pub fn null() -> Box<RawValue> {
    // INVARIANT: "null" is valid JSON, so this never takes the fallback.
    RawValue::from_string("null".to_owned()).unwrap_or_else(|_| Box::<RawValue>::default())
}

/// `{"jsonrpc":"2.0","id":…,"result":…}` built around the raw result, without re-encoding it.
pub fn result_response(id: &RawValue, result: &RawValue) -> String {
    let mut out = String::with_capacity(40 + id.get().len() + result.get().len());
    out.push_str(r#"{"jsonrpc":"2.0","id":"#);
    out.push_str(id.get());
    out.push_str(r#","result":"#);
    out.push_str(result.get());
    out.push('}');
    out
}

/// `{"jsonrpc":"2.0","id":…,"error":…}` around an error object given as raw JSON.
pub fn raw_error_response(id: Option<&RawValue>, error: &RawValue) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{},"error":{}}}"#,
        id.map_or("null", RawValue::get),
        error.get()
    )
}

/// An error response with a code, a message and optional data.
pub fn error_response(
    id: Option<&RawValue>,
    code: i64,
    message: &str,
    data: Option<&serde_json::Value>,
) -> String {
    let mut error = serde_json::json!({ "code": code, "message": message });
    if let (Some(data), Some(map)) = (data, error.as_object_mut()) {
        map.insert("data".into(), data.clone());
    }
    format!(
        r#"{{"jsonrpc":"2.0","id":{},"error":{}}}"#,
        id.map_or("null", RawValue::get),
        error
    )
}

/// A request text with a numeric id.
pub fn request_text(id: u64, method: &str, params: Option<&RawValue>) -> String {
    match params {
        Some(params) => format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":{},"params":{}}}"#,
            quoted(method),
            params.get()
        ),
        None => format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":{}}}"#,
            quoted(method)
        ),
    }
}

/// A notification text.
pub fn notification_text(method: &str, params: Option<&RawValue>) -> String {
    match params {
        Some(params) => format!(
            r#"{{"jsonrpc":"2.0","method":{},"params":{}}}"#,
            quoted(method),
            params.get()
        ),
        None => format!(r#"{{"jsonrpc":"2.0","method":{}}}"#, quoted(method)),
    }
}

fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned())
}

/// Serialises a value into raw JSON.
pub fn to_raw<T: serde::Serialize + ?Sized>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| null())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(text: &str) -> Result<Message, FrameError> {
        match parse_body(text.as_bytes(), 64)? {
            Body::Single(message) => Ok(message),
            Body::Batch(_) => panic!("unexpected batch"),
        }
    }

    #[test]
    fn requests_keep_params_as_raw_text() {
        let Message::Request(request) = single(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x", "arguments": {"a": 1}}}"#).unwrap() else {
            panic!("request");
        };
        assert_eq!(request.id.as_u64(), Some(7));
        assert_eq!(request.method, "tools/call");
        assert_eq!(
            request.params.unwrap().get(),
            r#"{"name":"x", "arguments": {"a": 1}}"#
        );
    }

    #[test]
    fn notifications_and_responses_are_told_apart() {
        assert!(matches!(
            single(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Ok(Message::Notification(_))
        ));
        assert!(matches!(
            single(r#"{"jsonrpc":"2.0","id":"a","result":{}}"#),
            Ok(Message::Response(Response { outcome: Ok(_), .. }))
        ));
        assert!(matches!(
            single(r#"{"jsonrpc":"2.0","id":"a","error":{"code":1,"message":"m"}}"#),
            Ok(Message::Response(Response {
                outcome: Err(_),
                ..
            }))
        ));
    }

    #[test]
    fn malformed_json_is_a_parse_error() {
        let err = single(r#"{"jsonrpc":"2.0","id":1,"method":"#).unwrap_err();
        assert_eq!(err.code(), code::PARSE_ERROR);
    }

    #[test]
    fn invalid_utf8_is_named() {
        assert_eq!(
            parse_body(b"{\"a\":\"\xff\"}", 64).unwrap_err(),
            FrameError::NotUtf8
        );
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert_eq!(
            parse_body(deep.as_bytes(), 64).unwrap_err(),
            FrameError::TooDeep { max: 64 }
        );
        // Brackets inside strings do not count.
        let ok = format!(
            r#"{{"jsonrpc":"2.0","method":"x","params":{{"s":"{}"}}}}"#,
            "[".repeat(100)
        );
        assert!(parse_body(ok.as_bytes(), 64).is_ok());
    }

    #[test]
    fn missing_and_wrong_typed_fields_are_invalid_requests() {
        for (text, needle) in [
            (r#"{"id":1,"method":"ping"}"#, "`jsonrpc` is missing"),
            (
                r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
                "`jsonrpc` must be \"2.0\"",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":42}"#,
                "`method` must be a string",
            ),
            (
                r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
                "`id` must be a string or an integer",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
                "`id` must be a string or an integer",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}"#,
                "`params` must be an object",
            ),
            (r#"{"jsonrpc":"2.0"}"#, "neither `method` nor `id`"),
            (r#"[1,2]"#, "must be a JSON object"),
            (r#""just a string""#, "must be a JSON object"),
        ] {
            let err = match parse_body(text.as_bytes(), 64) {
                Ok(Body::Batch(items)) => items.into_iter().find_map(Result::err).unwrap(),
                Ok(Body::Single(m)) => panic!("{text} parsed as {m:?}"),
                Err(err) => err,
            };
            assert_eq!(err.code(), code::INVALID_REQUEST, "{text}");
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn the_id_of_an_invalid_request_is_kept_for_the_error() {
        let err = single(r#"{"jsonrpc":"2.0","id":"req-1","method":7}"#).unwrap_err();
        assert_eq!(err.id().map(|id| id.as_raw().get()), Some("\"req-1\""));
    }

    #[test]
    fn responses_are_built_around_raw_results() {
        let id = Id::from_u64(3);
        let result = RawValue::from_string(r#"{"content":[]}"#.into()).unwrap();
        assert_eq!(
            result_response(id.as_raw(), &result),
            r#"{"jsonrpc":"2.0","id":3,"result":{"content":[]}}"#
        );
        let err = error_response(None, code::METHOD_NOT_FOUND, "no", None);
        let parsed: serde_json::Value = serde_json::from_str(&err).unwrap();
        assert_eq!(parsed["error"]["code"], -32601);
        assert!(parsed["id"].is_null());
    }
}
