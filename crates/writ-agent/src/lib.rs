//! The agent's side of Writ: an agent's key file, the RFC 7523 assertions and RFC 9449
//! DPoP proofs it signs with that key (`key`), and the token client that begins and
//! ends tasks at Writ's token endpoint (`client`). The CLI, `writ demo`, `writ bench`,
//! the gateway's tests and a future stdio bridge act as agents through it.
//!
//! No server code lives here: this crate speaks to a gateway over HTTP and does not
//! depend on `writ-gateway`.

pub mod client;
pub mod key;

pub use key::{AgentKey, AgentKeyError};
