//! Any upstream event stream, split anywhere: the decoder must not panic, and splitting
//! must not change what it decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use writ_mcp::sse::Decoder;

fuzz_target!(|input: (usize, &[u8])| {
    let (split, data) = input;
    let split = if data.is_empty() {
        0
    } else {
        split % data.len()
    };
    let mut whole = Decoder::default();
    let expected = whole.feed(data);
    let mut parts = Decoder::default();
    let (first, second) = data.split_at(split);
    let mut got = parts.feed(first);
    got.extend(parts.feed(second));
    assert_eq!(expected, got);
});
