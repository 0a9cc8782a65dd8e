//! Resource URIs as Writ decides on them: which ones it accepts at all, the patterns a task
//! or an operator writes for them, and the servers' declared URI templates.
//!
//! Writ grants and classifies resources by URI prefix (`file:///reports/*`) and routes a
//! read to the server whose template matches. Both are only safe if the URI that matches
//! is the URI the server resolves: `file:///reports/../secrets/key` starts with
//! `file:///reports/`, and `file:///reports%2F..%2Fsecrets` may be decoded by the server
//! after Writ matched it. So a URI that could mean another place once normalised is
//! refused outright ([`check`]) rather than normalised: dot segments, percent-encoded
//! `.`, `/` or `\`, backslashes, and control characters or spaces. No legitimate listed
//! resource needs them; a read that sends one is refused as the agent's error and never
//! forwarded.

use std::fmt;

/// The longest resource URI Writ accepts.
pub const MAX_URI_LEN: usize = 8 * 1024;

/// Why a URI, URI pattern or template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UriError(pub String);

/// Checks that `uri` is a URI Writ can decide on: in the one spelling Writ matches and
/// classifies, with nothing that could name another place once the server decodes or
/// normalises it. Refused: anything but ASCII (percent-encode the rest); an uppercase
/// scheme or authority; a `file` URI not written `file:///…`; a malformed percent
/// escape, or one of a character that needs none (`%73` for `s`: another spelling of the
/// same URI), of `.`, `/`, `\`, `%` or a control character, or of bytes that are not
/// UTF-8 (overlong forms of `.`); a `.` or `..` segment anywhere, before or after
/// decoding (also spelled with fullwidth or leader dots); an empty path segment (`//`).
pub fn check(uri: &str) -> Result<(), UriError> {
    let err = |why: &str| Err(UriError(format!("resource URI `{}` {why}", shorten(uri))));
    if uri.len() > MAX_URI_LEN {
        return err(&format!("is longer than {MAX_URI_LEN} bytes"));
    }
    let Some(scheme_end) = scheme_len(uri) else {
        return err("has no scheme (`scheme:…`)");
    };
    if uri.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return err("contains spaces or control characters");
    }
    if !uri.is_ascii() {
        return err("contains characters outside ASCII; percent-encode them");
    }
    if uri.contains('\\') {
        return err("contains a backslash");
    }
    let (scheme, rest) = uri.split_at(scheme_end);
    if scheme.bytes().any(|b| b.is_ascii_uppercase()) {
        return err("has an uppercase scheme; write it in lowercase");
    }
    let (authority, path) = match rest.strip_prefix("//") {
        Some(after) => after.split_at(after.find('/').unwrap_or(after.len())),
        None => ("", rest),
    };
    if authority.bytes().any(|b| b.is_ascii_uppercase()) {
        return err("has an uppercase host; write it in lowercase");
    }
    if scheme == "file:" && (!rest.starts_with("///")) {
        return err("must be written `file:///path` (no host, not `file:/path`)");
    }
    let decoded = match percent_decode(uri) {
        Ok(decoded) => decoded,
        Err(why) => return err(why),
    };
    let path = path.split(['?', '#']).next().unwrap_or(path);
    if path.contains("//") {
        return err("contains an empty path segment (`//`)");
    }
    if has_dot_segment(uri) || has_dot_segment(&decoded) {
        return err("contains a `.` or `..` segment");
    }
    Ok(())
}

/// `text` with its percent escapes decoded, refusing escapes that would let one URI be
/// spelled two ways or name another place: of unreserved characters, of `.`, `/`, `\`,
/// `%` or control characters, malformed ones, and bytes that are not UTF-8.
fn percent_decode(text: &str) -> Result<String, &'static str> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first != b'%' {
            bytes.push(first);
            rest = tail;
            continue;
        }
        let hex = |b: u8| char::from(b).to_digit(16);
        let (Some(&high), Some(&low)) = (tail.first(), tail.get(1)) else {
            return Err("has a malformed percent escape");
        };
        let (Some(high), Some(low)) = (hex(high), hex(low)) else {
            return Err("has a malformed percent escape");
        };
        let byte = u8::try_from(high * 16 + low).map_err(|_| "has a malformed percent escape")?;
        if byte.is_ascii_alphanumeric() || b"-_~".contains(&byte) {
            return Err(
                "contains a percent-encoded character that needs no encoding; write it as it is",
            );
        }
        if byte < 0x20 || byte == 0x7f || b"./\\%".contains(&byte) {
            return Err("contains a percent-encoded `.`, `/`, `\\`, `%` or control character");
        }
        bytes.push(byte);
        rest = tail.get(2..).unwrap_or_default();
    }
    String::from_utf8(bytes).map_err(|_| "contains percent-encoded bytes that are not UTF-8")
}

/// Whether any `/`-separated segment of `text` is `.` or `..`, counting the dots that
/// Unicode normalisation (NFKC) turns into full stops.
fn has_dot_segment(text: &str) -> bool {
    text.split('/').any(|segment| {
        let dots: String = segment
            .chars()
            .map(|c| match c {
                '\u{FF0E}' | '\u{2024}' | '\u{FE52}' => ".".to_owned(),
                '\u{2025}' => "..".to_owned(),
                other => other.to_string(),
            })
            .collect();
        dots == "." || dots == ".."
    })
}

/// Checks a value an agent asks a server to complete for a URI template's variable: it
/// must not carry what [`check`] refuses in a URI (a `..`, a backslash, an encoded `.`,
/// `/`, `\\` or `%`, a control character), since a server completing, say, file names
/// would otherwise list what lies outside the granted prefix.
pub fn check_completion_value(value: &str) -> Result<(), UriError> {
    let err = |why: &str| {
        Err(UriError(format!(
            "completion value `{}` {why}",
            shorten(value)
        )))
    };
    if value.len() > MAX_URI_LEN {
        return err(&format!("is longer than {MAX_URI_LEN} bytes"));
    }
    if value.chars().any(char::is_control) || value.contains('\\') {
        return err("contains a backslash or control characters");
    }
    let lower = value.to_ascii_lowercase();
    if value.contains("..")
        || ["%2e", "%2f", "%5c", "%25"]
            .iter()
            .any(|e| lower.contains(e))
    {
        return err("contains `..` or a percent-encoded `.`, `/`, `\\` or `%`");
    }
    Ok(())
}

/// The length of `uri`'s scheme and colon, when it starts with one (RFC 3986:
/// `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":"`).
fn scheme_len(uri: &str) -> Option<usize> {
    let colon = uri.find(':')?;
    let scheme = uri.get(..colon)?;
    let mut bytes = scheme.bytes();
    let first_is_alpha = bytes.next().is_some_and(|b| b.is_ascii_alphabetic());
    (first_is_alpha && bytes.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)))
        .then_some(colon + 1)
}

/// A URI for a message: long ones are cut (on a character boundary).
fn shorten(uri: &str) -> String {
    const SHOWN: usize = 200;
    if uri.len() <= SHOWN {
        return uri.to_owned();
    }
    let mut end = SHOWN;
    while !uri.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", uri.get(..end).unwrap_or_default())
}

/// Which resource URIs a task pattern or an `[[servers.resources]]` entry names: every
/// one (`*`), one exactly, or every one starting with a prefix (`file:///reports/*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UriPattern {
    Any,
    Exact(String),
    Prefix(String),
}

impl UriPattern {
    pub fn parse(text: &str) -> Result<Self, UriError> {
        if text == "*" {
            return Ok(Self::Any);
        }
        let (uri, prefix) = match text.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (text, false),
        };
        if uri.contains('*') {
            return Err(UriError(format!(
                "URI pattern `{text}`: `*` may only end the pattern"
            )));
        }
        check(uri).map_err(|e| UriError(format!("URI pattern `{text}`: {e}")))?;
        Ok(if prefix {
            Self::Prefix(uri.to_owned())
        } else {
            Self::Exact(uri.to_owned())
        })
    }

    /// True when `uri` (already [`check`]ed) falls under this pattern.
    pub fn matches(&self, uri: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(exact) => exact == uri,
            Self::Prefix(prefix) => uri.starts_with(prefix.as_str()),
        }
    }

    /// True when everything `other` names is also named by `self`.
    pub fn covers(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Any, _) => true,
            (_, Self::Any) => false,
            (Self::Exact(a), Self::Exact(b)) => a == b,
            (Self::Exact(_), Self::Prefix(_)) => false,
            (Self::Prefix(p), Self::Exact(u) | Self::Prefix(u)) => u.starts_with(p.as_str()),
        }
    }
}

impl fmt::Display for UriPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Exact(uri) => f.write_str(uri),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

/// A server's declared URI template (RFC 6570), compiled to match the URIs it expands to.
///
/// Each expression matches only what its operator can expand to: a simple `{var}` never
/// spans a `/`, `?` or `#` (RFC 6570 percent-encodes reserved characters in it), `{+var}`
/// and `{#var}` may span reserved characters, `{/var}` adds whole path segments, `{.var}`
/// labels, `{;var}` parameters and `{?var}` / `{&var}` a query. Matching is anchored at
/// both ends and runs in linear time (the `regex` crate), whatever the agent sends.
#[derive(Debug, Clone)]
pub struct UriTemplate {
    text: String,
    matcher: regex::Regex,
}

impl UriTemplate {
    pub fn parse(text: &str) -> Result<Self, UriError> {
        let err = |why: &str| UriError(format!("URI template `{}` {why}", shorten(text)));
        if text.len() > MAX_URI_LEN {
            return Err(err("is too long"));
        }
        const UNRESERVED: &str = r"(?:[A-Za-z0-9\-._~]|%[0-9A-Fa-f]{2})";
        const RESERVED: &str = r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})";
        let mut pattern = String::from("^");
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let literal = rest.get(..open).unwrap_or_default();
            if literal.contains('}') {
                return Err(err("has a `}` without its `{`"));
            }
            pattern.push_str(&regex::escape(literal));
            let after = rest.get(open + 1..).unwrap_or_default();
            let close = after.find('}').ok_or_else(|| err("has an unclosed `{`"))?;
            let expression = after.get(..close).unwrap_or_default();
            let (operator, names) = match expression.chars().next() {
                Some(op @ ('+' | '#' | '.' | '/' | ';' | '?' | '&')) => {
                    (Some(op), expression.get(1..).unwrap_or_default())
                }
                _ => (None, expression),
            };
            let valid_name = |name: &str| {
                let name = name.trim_end_matches('*');
                let name = name.split(':').next().unwrap_or_default();
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'%')
            };
            if names.is_empty() || !names.split(',').all(valid_name) {
                return Err(err(&format!(
                    "has an invalid expression `{{{expression}}}`"
                )));
            }
            let value = format!(r"{UNRESERVED}*(?:,{UNRESERVED}*)*");
            pattern.push_str(&match operator {
                None => format!("(?:{value})"),
                Some('+') => format!("(?:{RESERVED}*)"),
                Some('#') => format!("(?:#{RESERVED}*)?"),
                Some('.') => format!(r"(?:\.{value})*"),
                Some('/') => format!("(?:/{value})*"),
                Some(';') => r"(?:;(?:[A-Za-z0-9\-._~=,]|%[0-9A-Fa-f]{2})*)*".to_owned(),
                // `?` starts a query, `&` continues one.
                Some(_) => r"(?:[?&](?:[A-Za-z0-9\-._~=,&]|%[0-9A-Fa-f]{2})*)?".to_owned(),
            });
            rest = after.get(close + 1..).unwrap_or_default();
        }
        if rest.contains('}') {
            return Err(err("has a `}` without its `{`"));
        }
        pattern.push_str(&regex::escape(rest));
        pattern.push('$');
        let matcher = regex::Regex::new(&pattern).map_err(|_| err("cannot be compiled"))?;
        Ok(Self {
            text: text.to_owned(),
            matcher,
        })
    }

    /// The template as the server declared it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The fixed text before the first expression: longer is more specific.
    pub fn literal_prefix(&self) -> &str {
        self.text.split('{').next().unwrap_or_default()
    }

    /// True when `uri` (already [`check`]ed) is one this template expands to.
    pub fn matches(&self, uri: &str) -> bool {
        self.matcher.is_match(uri)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn uris_that_could_name_another_place_are_refused() {
        for good in [
            "file:///reports/q3.txt",
            "test://static/resource/1",
            "https://example.com/a?b=c#d",
            "demo://x/a.b/c..d/.hidden",
        ] {
            assert_eq!(check(good), Ok(()), "{good}");
        }
        for (bad, says) in [
            ("file:///reports/../secrets/key", "`..` segment"),
            ("file:///reports/./x", "`.` or `..`"),
            ("file:///reports/..", "`..` segment"),
            ("file:///reports/x?/../../etc/passwd", "`..` segment"),
            ("file:///reports%2F..%2Fsecrets", "percent-encoded"),
            ("file:///reports/%2e%2e/secrets", "percent-encoded"),
            ("file:///reports/%252e%252e/secrets", "percent-encoded"),
            ("file:///reports/%c0%ae%c0%ae/secrets", "not UTF-8"),
            ("file:///reports/%EF%BC%8E%EF%BC%8E/secrets", "`..` segment"),
            ("file:///reports/%E2%80%A5/secrets", "`..` segment"),
            ("file:///%73ecrets/key", "needs no encoding"),
            ("file:///reports/%zz", "malformed"),
            ("file:///reports/%2", "malformed"),
            ("file:///reports//etc/passwd", "empty path segment"),
            ("file://localhost/secrets/key", "file:///path"),
            ("file:/secrets/key", "file:///path"),
            ("FILE:///secrets/key", "uppercase scheme"),
            ("https://EXAMPLE.com/x", "uppercase host"),
            ("file:///résumé.txt", "outside ASCII"),
            ("file:///reports\\..\\secrets", "backslash"),
            ("file:///a b", "spaces"),
            ("file:///a\u{0}b", "control"),
            ("/etc/passwd", "no scheme"),
            ("1x://a", "no scheme"),
        ] {
            let error = check(bad).unwrap_err().0;
            assert!(error.contains(says), "{bad}: {error}");
        }
        assert!(check_completion_value("q3").is_ok());
        for bad in ["../", "a\\b", "%2e%2e", "x%252e"] {
            assert!(check_completion_value(bad).is_err(), "{bad}");
        }
        // Non-ASCII, percent-encoded as UTF-8, is a name like any other.
        assert_eq!(check("file:///r%C3%A9sum%C3%A9.txt"), Ok(()));
        // A dot segment in the query is data, not a path.
        assert_eq!(check("demo://x/find?path=../y"), Ok(()));
    }

    #[test]
    fn uri_patterns_match_and_cover_without_widening() {
        let p = |t: &str| UriPattern::parse(t).unwrap();
        assert!(p("file:///reports/*").matches("file:///reports/q3.txt"));
        assert!(!p("file:///reports/*").matches("file:///secrets/key"));
        assert!(!p("file:///reports/*").matches("https://file:///reports/"));
        assert!(p("file:///a.txt").matches("file:///a.txt"));
        assert!(!p("file:///a.txt").matches("file:///a.txt2"));
        assert!(p("*").covers(&p("file:///reports/*")));
        assert!(p("file:///reports/*").covers(&p("file:///reports/2026/*")));
        assert!(p("file:///reports/*").covers(&p("file:///reports/q3.txt")));
        assert!(!p("file:///reports/q3.txt").covers(&p("file:///reports/*")));
        assert!(!p("file:///reports/*").covers(&p("*")));
        assert!(!p("file:///reports/2026/*").covers(&p("file:///reports/*")));
        for bad in ["file:///*/x", "file:///../*", "no-scheme*", "file:///a%2f*"] {
            assert!(UriPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates_match_only_what_their_operators_expand_to() {
        let t = |s: &str| UriTemplate::parse(s).unwrap();
        let simple = t("file:///reports/{name}");
        assert!(simple.matches("file:///reports/q3.txt"));
        assert!(
            !simple.matches("file:///reports/2026/q3.txt"),
            "a simple value has no `/`"
        );
        assert!(!simple.matches("file:///secrets/q3.txt"));
        assert!(!simple.matches("file:///reports/q3.txt/../../x"));
        let reserved = t("file:///reports/{+path}");
        assert!(reserved.matches("file:///reports/2026/q3.txt"));
        assert!(!reserved.matches("http://file:///reports/x"));
        let typed = t("demo://resource/dynamic/{type}/{id}");
        assert!(typed.matches("demo://resource/dynamic/text/1"));
        assert!(!typed.matches("demo://resource/dynamic/text"));
        let query = t("weather://{city}{?units,lang}");
        assert!(query.matches("weather://paris?units=c&lang=fr"));
        assert!(query.matches("weather://paris"));
        assert_eq!(query.literal_prefix(), "weather://");
        let path = t("repo://{owner}{/segments*}");
        assert!(path.matches("repo://writ/src/lib.rs"));
        for bad in ["a://{", "a://}", "a://{}", "a://{a b}"] {
            assert!(UriTemplate::parse(bad).is_err(), "{bad}");
        }
        // Worst input: huge, or a template of nothing but expressions, ends in an answer.
        let huge = format!("file:///{}", "a/".repeat(MAX_URI_LEN));
        assert!(check(&huge).unwrap_err().0.contains("longer than"));
        assert!(UriTemplate::parse(&format!("a://{}", "x".repeat(MAX_URI_LEN))).is_err());
        let many = format!("a://{}", "{+a}{b}".repeat(500));
        if let Ok(template) = UriTemplate::parse(&many) {
            let _ = template.matches(&format!("a://{}", "x/".repeat(2_000)));
        }
        assert!(UriPattern::parse(&format!("file:///{}*", "%".repeat(3))).is_err());
        // Regex metacharacters in the literal parts are literal.
        assert!(!t("a://x.y/{n}").matches("a://xzy/1"));
    }
}
