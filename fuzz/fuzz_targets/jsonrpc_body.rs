//! Any HTTP body: framing must answer with a message, a batch or an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(err) = writ_mcp::jsonrpc::parse_body(data, 64) {
        // Every refusal maps to a JSON-RPC code and a printable message.
        let _ = (err.code(), err.to_string(), err.id());
    }
});
