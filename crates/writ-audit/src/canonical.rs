//! The building blocks of the canonical encoding (see the crate docs for the rules).
//!
//! Everything writes into a [`Sink`], so the same code fills a buffer for
//! [`Record::canonical`](crate::Record::canonical) and feeds SHA-256 directly when only
//! the hash is wanted: sealing and verifying never build the encoded record in memory.

use std::fmt;

use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

/// Where encoded bytes go.
pub(crate) trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

/// `u64(n)`: eight bytes, big-endian.
pub(crate) fn put_u64(out: &mut impl Sink, n: u64) {
    out.put(&n.to_be_bytes());
}

/// `i64(n)`: eight bytes, big-endian two's complement.
pub(crate) fn put_i64(out: &mut impl Sink, n: i64) {
    out.put(&n.to_be_bytes());
}

/// `str(s)`: the UTF-8 length as `u64`, then the bytes.
pub(crate) fn put_str(out: &mut impl Sink, s: &str) {
    // usize is at most 64 bits on every target Rust supports.
    put_u64(out, s.len() as u64);
    out.put(s.as_bytes());
}

/// `opt(s)`: `0x00` when absent, `0x01` then `str(s)` when present.
pub(crate) fn put_opt(out: &mut impl Sink, s: Option<&str>) {
    match s {
        None => out.put(&[0]),
        Some(s) => {
            out.put(&[1]);
            put_str(out, s);
        }
    }
}

/// Canonical JSON of a whole value.
pub(crate) fn put_json(out: &mut impl Sink, value: &Value) {
    match value {
        Value::Null => out.put(b"null"),
        Value::Bool(true) => out.put(b"true"),
        Value::Bool(false) => out.put(b"false"),
        Value::Number(n) => put_number(out, n),
        Value::String(s) => put_json_str(out, s),
        Value::Array(items) => {
            out.put(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.put(b",");
                }
                put_json(out, item);
            }
            out.put(b"]");
        }
        Value::Object(map) => put_object(out, map),
    }
}

/// Canonical JSON of an object: members sorted by the UTF-8 bytes of their keys
/// (`str`'s `Ord` is exactly that).
pub(crate) fn put_object(out: &mut impl Sink, map: &Map<String, Value>) {
    out.put(b"{");
    // Maps built in key order (and every map without `preserve_order`) are already
    // sorted; only the others pay for a sort.
    if map.keys().is_sorted() {
        put_members(out, map.iter());
    } else {
        let mut members: Vec<(&String, &Value)> = map.iter().collect();
        members.sort_unstable_by(|a, b| a.0.cmp(b.0));
        put_members(out, members.into_iter());
    }
    out.put(b"}");
}

fn put_members<'a>(out: &mut impl Sink, members: impl Iterator<Item = (&'a String, &'a Value)>) {
    for (i, (key, value)) in members.enumerate() {
        if i > 0 {
            out.put(b",");
        }
        put_json_str(out, key);
        out.put(b":");
        put_json(out, value);
    }
}

/// A number exactly as serde_json prints it: integers in decimal, floats in ryu's
/// shortest round-trip form.
fn put_number(out: &mut impl Sink, n: &Number) {
    struct Adapter<'a, S: ?Sized>(&'a mut S);
    impl<S: Sink + ?Sized> fmt::Write for Adapter<'_, S> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0.put(s.as_bytes());
            Ok(())
        }
    }
    // The adapter never fails, so neither can the write.
    let _ = fmt::write(&mut Adapter(out), format_args!("{n}"));
}

/// A JSON string, escaped exactly as serde_json escapes it: `"` and `\`, the short
/// forms `\b \t \n \f \r`, `\u00xx` (lowercase hex) for the other control characters
/// below U+0020, everything else as raw UTF-8.
fn put_json_str(out: &mut impl Sink, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.put(b"\"");
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x09 => b"\\t",
            0x0a => b"\\n",
            0x0c => b"\\f",
            0x0d => b"\\r",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.put(bytes.get(start..i).unwrap_or_default());
        if short.is_empty() {
            let hi = HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0');
            let lo = HEX.get(usize::from(b & 0xf)).copied().unwrap_or(b'0');
            out.put(&[b'\\', b'u', b'0', b'0', hi, lo]);
        } else {
            out.put(short);
        }
        start = i + 1;
    }
    out.put(bytes.get(start..).unwrap_or_default());
    out.put(b"\"");
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        for nibble in [b >> 4, b & 0xf] {
            text.push(char::from(
                HEX.get(usize::from(nibble)).copied().unwrap_or(b'0'),
            ));
        }
    }
    text
}

/// The canonical JSON of a value, as bytes (see the crate docs for the rules).
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    put_json(&mut out, value);
    out
}

/// Lowercase hex SHA-256 of `bytes`: of a result exactly as received, or of canonical
/// JSON already encoded (then equal to [`digest`] of its value).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex SHA-256 of a value's canonical JSON: the digest of arguments and
/// results that audit records carry. Two values that differ only in key order have
/// the same digest.
pub fn digest(value: &Value) -> String {
    let mut hasher = Sha256::new();
    put_json(&mut hasher, value);
    hex(&hasher.finalize())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use serde_json::json;

    fn text(value: &Value) -> String {
        String::from_utf8(canonical_json(value)).unwrap()
    }

    #[test]
    fn strings_are_escaped_exactly_as_serde_json_escapes_them() {
        let mut all = String::new();
        for c in (0u32..0x80).filter_map(char::from_u32) {
            all.push(c);
        }
        all.push_str("é/ü\u{2028}\u{1F600}\u{FEFF}");
        for s in [all.as_str(), "", "plain", "\"", "\\", "a\u{0}b", "\u{1f}"] {
            let value = Value::String(s.to_owned());
            assert_eq!(
                text(&value),
                serde_json::to_string(&value).unwrap(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn numbers_are_printed_exactly_as_serde_json_prints_them() {
        for s in [
            "0",
            "-1",
            "18446744073709551615",
            "-9223372036854775808",
            "1.0",
            "1e2",
            "0.1",
            "1e-6",
            "0.00001",
            "1e16",
            "1e15",
            "1.5e-7",
            "-0.0",
            "5e-324",
        ] {
            let value: Value = serde_json::from_str(s).unwrap();
            assert_eq!(text(&value), serde_json::to_string(&value).unwrap(), "{s}");
        }
        // The rules the crate docs write down; arbitrary_precision would break them.
        let pinned = [
            ("1.00", "1.0"),
            ("1e2", "100.0"),
            ("1e16", "1e+16"),
            ("1e-6", "1e-6"),
        ];
        for (input, printed) in pinned {
            assert_eq!(text(&serde_json::from_str(input).unwrap()), printed);
        }
    }

    #[test]
    fn objects_are_sorted_by_key_bytes_at_every_level_without_whitespace() {
        let value = json!({"b": [1, {"z": null, "a": true}], "a": "x", "B": 1, "é": 2, "aa": {}});
        assert_eq!(
            text(&value),
            r#"{"B":1,"a":"x","aa":{},"b":[1,{"a":true,"z":null}],"é":2}"#
        );
    }

    #[test]
    fn the_digest_ignores_key_order_but_not_values() {
        let mut one = Map::new();
        one.insert("path".into(), json!("/etc"));
        one.insert("depth".into(), json!(2));
        let mut two = Map::new();
        two.insert("depth".into(), json!(2));
        two.insert("path".into(), json!("/etc"));
        assert_eq!(
            digest(&Value::Object(one)),
            digest(&Value::Object(two.clone()))
        );
        two.insert("depth".into(), json!(3));
        assert_ne!(
            digest(&json!({"path": "/etc", "depth": 2})),
            digest(&Value::Object(two))
        );
        assert_eq!(
            digest(&json!({})),
            // SHA-256 of the two bytes `{}`.
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }

    #[test]
    fn the_digest_is_the_hash_of_the_canonical_encoding() {
        let value = json!({"b": [1, 2.5, "x"], "a": {"d": null, "c": true}});
        assert_eq!(sha256_hex(&canonical_json(&value)), digest(&value));
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex(&[0x00, 0xab, 0x0f, 0xf0]), "00ab0ff0");
    }
}
