//! Writ's pure types and decisions. Nothing here opens a socket or touches storage.

pub mod clock;
pub mod config;
pub mod naming;
pub mod oauth;
pub mod task;
pub mod tools;
pub mod uri;
