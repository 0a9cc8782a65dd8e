//! OAuth wire constants that both sides of the token endpoint spell: the gateway, which
//! checks them, and the agent, which sends them.

/// RFC 8693's grant type: exchange a token for another.
pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693's token type for a JWT (an agent's identity assertion).
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// RFC 8693's token type for an access token (a writ).
pub const TOKEN_TYPE_ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";
/// RFC 7523's client assertion type: a client authenticating with a signed JWT.
pub const CLIENT_ASSERTION_JWT: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
