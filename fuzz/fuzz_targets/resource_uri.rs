//! Any resource URI an agent sends, and any URI template an upstream declares: checking,
//! compiling and matching must end in an answer, never a panic; and a URI that passes
//! the check never holds a dot segment, so a prefix grant can never be escaped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use writ_core::uri::{UriPattern, UriTemplate, check};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The first line is a template (or pattern), the rest a URI.
    let (first, uri) = text.split_once('\n').unwrap_or((text, text));
    let accepted = check(uri).is_ok();
    if accepted {
        let path = uri.split(['?', '#']).next().unwrap_or(uri);
        assert!(!path.split('/').any(|s| s == ".." || s == "."), "{uri}");
    }
    if let Ok(template) = UriTemplate::parse(first) {
        let _ = template.matches(uri);
    }
    if let Ok(pattern) = UriPattern::parse(first) {
        let _ = pattern.matches(uri);
        if let Ok(other) = UriPattern::parse(uri) {
            // Coverage never widens: what a covered pattern matches, its cover matches.
            if pattern.covers(&other) && accepted && other.matches(uri) {
                assert!(pattern.matches(uri), "{first} covers {uri}");
            }
        }
    }
});
