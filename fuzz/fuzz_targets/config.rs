//! Any `writ.toml` text: parsing must end in a config or an error with a message.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(err) = writ_core::config::Config::parse(text) {
            let _ = err.to_string();
        }
    }
});
