//! Recognising values that look like credentials (see [`looks_like_credential`]).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Whether `s` looks like a credential. Conservative on purpose: each rule is a shape
/// real credentials have and ordinary text rarely does.
///
/// - a PEM private key: `-----BEGIN ` and `PRIVATE KEY` anywhere;
/// - `password=`, `passwd=`, `pwd=`, `token=`, `secret=`, `api_key=`, `apikey=` (any
///   case) followed by a value, and `password:` / `passwd:` followed by a value;
/// - `Bearer ` (any case) followed by 16 or more token characters;
/// - `Basic ` (any case) followed by base64 that decodes to `user:password`;
/// - a URL with a password in it (`scheme://user:password@host`);
/// - and, among the words of `s` (runs of `A-Z a-z 0-9 + / _ - .`):
///   - a JWT or JWE: `eyJ` then three or five dot-separated base64url parts, 20 or more
///     characters in all;
///   - an AWS access key id: `AKIA` or `ASIA` and 16 more of `A-Z 0-9`, the whole word;
///   - a token with a well-known prefix and 20 or more characters after it: GitHub
///     (`ghp_ gho_ ghu_ ghs_ ghr_ github_pat_`), GitLab (`glpat-`), Slack
///     (`xoxb- xoxp- xoxa- xoxr- xoxs-`), Stripe (`sk_live_ rk_live_`), OpenAI and
///     Anthropic (`sk-`), Google API keys (`AIza`);
///   - a long random-looking word: 32 or more hex digits with at least 3 bits of
///     entropy per character (SHA-256 digests and 40-digit commit ids count, 32 zeros
///     do not), or 32 or more characters of base64 (`A-Z a-z 0-9 + / _ -`, then
///     optional `=` padding) mixing upper case, lower case and digits, with at least
///     4 bits of entropy per character and a change of character class (upper, lower,
///     digit, other) between at least half of all neighbouring characters. That catches
///     about 95% of random 32-character keys (the rest need another rule, or to be held
///     as secrets) and leaves camelCase identifiers and paths alone.
pub fn looks_like_credential(s: &str) -> bool {
    credential_rule(s).is_some()
}

/// The rule that matched, for tests.
fn credential_rule(s: &str) -> Option<&'static str> {
    if s.contains("-----BEGIN ") && s.contains("PRIVATE KEY") {
        return Some("pem");
    }
    let lower = s.to_ascii_lowercase();
    for marker in [
        "password=",
        "passwd=",
        "pwd=",
        "token=",
        "secret=",
        "api_key=",
        "apikey=",
        "password:",
        "passwd:",
    ] {
        let mut rest = lower.as_str();
        while let Some(at) = rest.find(marker) {
            rest = rest.get(at + marker.len()..).unwrap_or_default();
            let value = rest.trim_start_matches(' ');
            if value
                .chars()
                .next()
                .is_some_and(|c| !c.is_whitespace() && !matches!(c, '&' | ';' | ',' | '"' | '\''))
            {
                return Some("assignment");
            }
        }
    }
    if let Some(at) = lower.find("bearer ") {
        let token = lower.get(at + 7..).unwrap_or_default().trim_start();
        if token
            .bytes()
            .take_while(|b| is_word_byte(*b) || *b == b'=')
            .count()
            >= 16
        {
            return Some("bearer");
        }
    }
    if let Some(at) = lower.find("basic ") {
        let start = at + 6;
        let encoded: String = s
            .get(start..)
            .unwrap_or_default()
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
            .collect();
        if encoded.len() >= 8
            && STANDARD
                .decode(&encoded)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .is_some_and(|text| text.contains(':'))
        {
            return Some("basic");
        }
    }
    if url_has_password(s) {
        return Some("url");
    }
    s.split(|c: char| !(c.is_ascii() && is_word_byte(c as u8)))
        .find_map(word_rule)
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'_' | b'-' | b'.')
}

fn url_has_password(s: &str) -> bool {
    let mut rest = s;
    while let Some(at) = rest.find("://") {
        rest = rest.get(at + 3..).unwrap_or_default();
        let authority = rest
            .split(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
            .next()
            .unwrap_or_default();
        if let Some((userinfo, _host)) = authority.rsplit_once('@')
            && let Some((_user, password)) = userinfo.split_once(':')
            && !password.is_empty()
        {
            return true;
        }
    }
    false
}

const PREFIXES: &[&str] = &[
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "xoxb-",
    "xoxp-",
    "xoxa-",
    "xoxr-",
    "xoxs-",
    "sk_live_",
    "rk_live_",
    "sk-",
    "AIza",
];

fn word_rule(word: &str) -> Option<&'static str> {
    if word.starts_with("eyJ") && word.len() >= 20 {
        let parts: Vec<&str> = word.split('.').collect();
        let base64url = |p: &&str| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if matches!(parts.len(), 3 | 5)
            && parts.iter().all(base64url)
            && parts.iter().take(2).all(|p| !p.is_empty())
        {
            return Some("jwt");
        }
    }
    if word.len() == 20
        && (word.starts_with("AKIA") || word.starts_with("ASIA"))
        && word
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return Some("aws");
    }
    for prefix in PREFIXES {
        if let Some(tail) = word.strip_prefix(prefix)
            && tail.len() >= 20
            && tail
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Some("prefix");
        }
    }
    random_looking(word)
}

fn random_looking(word: &str) -> Option<&'static str> {
    let body = word.trim_end_matches('=');
    if body.len() < 32 {
        return None;
    }
    if body.bytes().all(|b| b.is_ascii_hexdigit()) {
        return (entropy(body) >= 3.0).then_some("hex");
    }
    let alphabet = body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'_' | b'-'));
    let mixed = body.bytes().any(|b| b.is_ascii_uppercase())
        && body.bytes().any(|b| b.is_ascii_lowercase())
        && body.bytes().any(|b| b.is_ascii_digit());
    (alphabet && mixed && entropy(body) >= 4.0 && class_changes(body) >= 0.5).then_some("base64")
}

/// How often neighbouring characters differ in class (upper case, lower case, digit,
/// other), from 0 to 1. About 0.65 for random base64; words written together in
/// camelCase or as a path stay below 0.45.
fn class_changes(word: &str) -> f64 {
    let class = |b: &u8| match b {
        b'A'..=b'Z' => 0,
        b'a'..=b'z' => 1,
        b'0'..=b'9' => 2,
        _ => 3,
    };
    let bytes = word.as_bytes();
    let changes = bytes
        .windows(2)
        .filter(|pair| pair.first().map(class) != pair.get(1).map(class))
        .count();
    changes as f64 / bytes.len().saturating_sub(1).max(1) as f64
}

/// Shannon entropy of the word's characters, in bits per character.
fn entropy(word: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in word.bytes() {
        if let Some(count) = counts.get_mut(usize::from(b)) {
            *count += 1;
        }
    }
    let len = word.len() as f64;
    counts
        .iter()
        .filter(|&&n| n > 0)
        .map(|&n| {
            let p = f64::from(n) / len;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> Option<&'static str> {
        credential_rule(s)
    }

    #[test]
    fn jwts_are_credentials() {
        let jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJlLWJ5dGVz";
        assert_eq!(rule(jwt), Some("jwt"));
        assert_eq!(rule(&format!("token is {jwt}, use it")), Some("jwt"));
        assert_eq!(rule("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0."), Some("jwt"));
        assert_eq!(rule("eyJ.is.short"), None);
    }

    #[test]
    fn bearer_and_basic_authorization_values_are_credentials() {
        assert_eq!(rule("Bearer abcdefghijklmnop"), Some("bearer"));
        assert_eq!(
            rule("authorization: bearer 0123456789abcdefXYZ"),
            Some("bearer")
        );
        assert_eq!(rule("Basic dXNlcjpwYXNzd29yZA=="), Some("basic"));
        assert_eq!(rule("a bearer of bad news"), None);
        assert_eq!(rule("the basic approach"), None);
    }

    #[test]
    fn pem_private_keys_are_credentials() {
        let pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----";
        assert_eq!(rule(pem), Some("pem"));
        assert_eq!(rule("-----BEGIN PRIVATE KEY-----"), Some("pem"));
        assert_eq!(
            rule("-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----"),
            None
        );
    }

    #[test]
    fn aws_access_key_ids_are_credentials() {
        assert_eq!(rule("AKIAIOSFODNN7EXAMPLE"), Some("aws"));
        assert_eq!(rule("key ASIAIOSFODNN7EXAMPLE here"), Some("aws"));
        assert_eq!(rule("AKIAIOSFODNN7EXAMPL"), None);
        assert_eq!(rule("AKIAIOSFODNN7EXAMPLEX"), None);
        assert_eq!(rule("AKIAiosfodnn7example"), None);
    }

    #[test]
    fn assignments_to_passwords_and_tokens_are_credentials() {
        for s in [
            "postgres host=db password=hunter2",
            "https://api.example/x?access_token=abc&x=1",
            "TOKEN=abc",
            "api_key=1",
            "password: hunter2",
        ] {
            assert_eq!(rule(s), Some("assignment"), "{s}");
        }
        for s in [
            "password=",
            "token= ",
            "password=&next=1",
            "reset your password: ",
            "tokens",
        ] {
            assert_eq!(rule(s), None, "{s}");
        }
    }

    #[test]
    fn urls_with_passwords_are_credentials() {
        assert_eq!(rule("postgres://writ:hunter2@db:5432/writ"), Some("url"));
        assert_eq!(rule("see https://user@example.com/x"), None);
        assert_eq!(rule("https://example.com/a:b@c"), None);
    }

    #[test]
    fn tokens_with_well_known_prefixes_are_credentials() {
        for s in [
            "ghp_0123456789abcdefghijABCDEFGHIJ012345",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
            "glpat-abcdefghij0123456789",
            "xoxb-1234567890-abcdefghij",
            "sk-ant-api03-abcdefghijklmnopqrstuvwxyz",
            "sk_live_abcdefghijklmnopqrstuvwx",
            "AIzaSyA-abcdefghijklmnopqrstuvwxyz01234",
        ] {
            assert_eq!(rule(s), Some("prefix"), "{s}");
        }
        for s in ["ghp_short", "sk-learn", "task-runner"] {
            assert_eq!(rule(s), None, "{s}");
        }
    }

    #[test]
    fn long_random_hex_and_base64_are_credentials_but_ordinary_words_are_not() {
        for s in [
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "4c9c1f8e2b7d0a3f5e6b8c1d2a3f4e5b",
            "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MEFCQ0RFRkdISUpLTE1O",
            "q8Jx3V/aZ0+LmN7pR2sT5uW9yB4cD6eF1gH0iK=",
        ] {
            let found = rule(s);
            assert!(matches!(found, Some("hex" | "base64")), "{s}: {found:?}");
        }
        for s in [
            "00000000000000000000000000000000",
            "550e8400-e29b-41d4-a716-446655440000",
            "/home/writ/projects/gateway/src/Main2.rs",
            "ThisIsAVeryLongIdentifierNameForTests2",
            "HTTPRequestHandlerFactoryBuilderImpl2",
            "crates/writ-gateway/src/pipeline/decide.rs",
            "The quick brown fox jumps over the lazy dog 42 times.",
        ] {
            assert_eq!(rule(s), None, "{s}");
        }
    }
}
