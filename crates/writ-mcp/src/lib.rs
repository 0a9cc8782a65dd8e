//! The MCP wire for Writ: JSON-RPC framing, protocol revisions, Server-Sent Events,
//! clients for upstream servers, and a small server kit for Writ's own demo and bench
//! servers.

pub mod jsonrpc;
pub mod revision;
pub mod server;
pub mod sse;
pub mod upstream;
