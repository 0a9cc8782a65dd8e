//! The sections of `writ.toml` that decide who gets in: `[store]`, `[identity]`,
//! `[tokens]` and `[admin]`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{At, ConfigError, RawValueSource, ValueSource};

const DEFAULT_STORE_PATH: &str = ".writ/writ.db";
const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);
const DEFAULT_MAX_TTL: Duration = Duration::from_secs(30 * 60);
const DEFAULT_ASSERTION_MAX_LIFETIME: Duration = Duration::from_secs(5 * 60);
const DEFAULT_DPOP_PROOF_MAX_AGE: Duration = Duration::from_secs(60);
const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(30);
const DEFAULT_MAX_DELEGATION_DEPTH: u32 = 2;
/// A chain deeper than this is not delegation any more but a loop; refuse to configure it.
const LIMIT_MAX_DELEGATION_DEPTH: u32 = 8;

/// Where Writ keeps its state.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The SQLite database file. A relative path is relative to the config file's folder.
    pub path: PathBuf,
}

/// Ways an agent may prove who it is, besides a key registered in Writ.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// An identity proven by an OIDC issuer or SPIFFE must also be registered as an agent.
    pub require_registered: bool,
    /// The longest `exp - iat` an agent's own assertion may have.
    pub assertion_max_lifetime: Duration,
    pub oidc: Vec<OidcIssuer>,
    pub spiffe: Vec<SpiffeTrust>,
}

/// A trusted OIDC issuer whose JWTs name agents.
#[derive(Debug, Clone)]
pub struct OidcIssuer {
    pub issuer: String,
    pub jwks_url: String,
    /// The `aud` its tokens must carry for Writ.
    pub audience: String,
    /// The claim whose value names the agent (`sub` unless said otherwise).
    pub agent_claim: String,
}

/// A SPIFFE trust domain whose JWT-SVIDs name agents.
#[derive(Debug, Clone)]
pub struct SpiffeTrust {
    pub trust_domain: String,
    /// The trust domain's JWT bundle: a JWK set file (re-read when it changes).
    pub bundle: PathBuf,
    /// The one audience JWT-SVIDs must carry; Writ's issuer URL when not set.
    pub audience: Option<String>,
}

/// How Writ signs the writs it issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SigningAlgorithm {
    EdDSA,
    ES256,
}

impl SigningAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
        }
    }
}

/// Whether writs must be bound to a key the agent proves with DPoP (RFC 9449).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DpopMode {
    /// Bearer writs are issued when the agent sends no proof; bound writs always need one.
    Optional,
    /// Every writ is bound; a token request without a proof is refused.
    Required,
}

#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub algorithm: SigningAlgorithm,
    /// The lifetime of a writ when the agent asks for none.
    pub ttl: Duration,
    /// The longest lifetime a writ may have; longer requests are clipped to it.
    pub max_ttl: Duration,
    pub dpop: DpopMode,
    /// Require a server-issued nonce in every DPoP proof (RFC 9449 section 8).
    pub dpop_nonce: bool,
    /// How far a DPoP proof's `iat` may lie from now.
    pub dpop_proof_max_age: Duration,
    /// Tolerance for clocks that disagree, applied to `exp`, `nbf` and `iat`.
    pub clock_skew: Duration,
    pub max_delegation_depth: u32,
}

/// Operator access to `/oauth/introspect` and the admin API.
#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    /// The bearer token operators present; always a reference, never a value in the file.
    pub token: Option<ValueSource>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    path: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentity {
    require_registered: Option<bool>,
    assertion_max_lifetime: Option<Spanned<String>>,
    #[serde(default)]
    oidc: Vec<RawOidc>,
    #[serde(default)]
    spiffe: Vec<RawSpiffe>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOidc {
    issuer: Spanned<String>,
    jwks_url: Spanned<String>,
    audience: String,
    agent_claim: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpiffe {
    trust_domain: Spanned<String>,
    bundle: String,
    audience: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTokens {
    algorithm: Option<SigningAlgorithm>,
    ttl: Option<Spanned<String>>,
    max_ttl: Option<Spanned<String>>,
    dpop: Option<DpopMode>,
    dpop_nonce: Option<bool>,
    dpop_proof_max_age: Option<Spanned<String>>,
    clock_skew: Option<Spanned<String>>,
    max_delegation_depth: Option<Spanned<u32>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    token: Option<Spanned<RawValueSource>>,
}

impl RawStore {
    pub(super) fn into_config(self) -> StoreConfig {
        StoreConfig {
            path: PathBuf::from(self.path.as_deref().unwrap_or(DEFAULT_STORE_PATH)),
        }
    }
}

impl RawIdentity {
    pub(super) fn into_config(self, at: &At<'_>) -> Result<IdentityConfig, ConfigError> {
        let mut oidc = Vec::new();
        for raw in self.oidc {
            check_https_or_loopback(at, "identity.oidc.issuer", &raw.issuer)?;
            check_https_or_loopback(at, "identity.oidc.jwks_url", &raw.jwks_url)?;
            oidc.push(OidcIssuer {
                issuer: raw.issuer.into_inner(),
                jwks_url: raw.jwks_url.into_inner(),
                audience: raw.audience,
                agent_claim: raw.agent_claim.unwrap_or_else(|| "sub".into()),
            });
        }
        let mut spiffe = Vec::new();
        for raw in self.spiffe {
            let domain = raw.trust_domain.get_ref();
            let valid = !domain.is_empty()
                && domain.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
                });
            if !valid {
                return Err(at.error(
                    &raw.trust_domain,
                    format!(
                        "`trust_domain` = `{domain}` must be a SPIFFE trust domain such as \"example.org\" (lowercase, no scheme)"
                    ),
                ));
            }
            spiffe.push(SpiffeTrust {
                trust_domain: raw.trust_domain.into_inner(),
                bundle: PathBuf::from(raw.bundle),
                audience: raw.audience,
            });
        }
        Ok(IdentityConfig {
            require_registered: self.require_registered.unwrap_or(true),
            assertion_max_lifetime: at.duration(
                "assertion_max_lifetime",
                self.assertion_max_lifetime.as_ref(),
                DEFAULT_ASSERTION_MAX_LIFETIME,
            )?,
            oidc,
            spiffe,
        })
    }
}

impl RawTokens {
    pub(super) fn into_config(self, at: &At<'_>) -> Result<TokenConfig, ConfigError> {
        let ttl = at.duration("ttl", self.ttl.as_ref(), DEFAULT_TTL)?;
        let max_ttl = at.duration("max_ttl", self.max_ttl.as_ref(), DEFAULT_MAX_TTL)?;
        if ttl > max_ttl {
            let line = self.ttl.as_ref().or(self.max_ttl.as_ref());
            return Err(match line {
                Some(spanned) => at.error(spanned, "`tokens.ttl` is longer than `tokens.max_ttl`"),
                None => ConfigError {
                    line: None,
                    message: "`tokens.ttl` is longer than `tokens.max_ttl`".into(),
                },
            });
        }
        let max_delegation_depth = match self.max_delegation_depth {
            None => DEFAULT_MAX_DELEGATION_DEPTH,
            Some(depth) if *depth.get_ref() <= LIMIT_MAX_DELEGATION_DEPTH => depth.into_inner(),
            Some(depth) => {
                return Err(at.error(
                    &depth,
                    format!("`max_delegation_depth` may be at most {LIMIT_MAX_DELEGATION_DEPTH}"),
                ));
            }
        };
        Ok(TokenConfig {
            algorithm: self.algorithm.unwrap_or(SigningAlgorithm::EdDSA),
            ttl,
            max_ttl,
            dpop: self.dpop.unwrap_or(DpopMode::Optional),
            dpop_nonce: self.dpop_nonce.unwrap_or(false),
            dpop_proof_max_age: at.duration(
                "dpop_proof_max_age",
                self.dpop_proof_max_age.as_ref(),
                DEFAULT_DPOP_PROOF_MAX_AGE,
            )?,
            clock_skew: at.duration("clock_skew", self.clock_skew.as_ref(), DEFAULT_CLOCK_SKEW)?,
            max_delegation_depth,
        })
    }
}

impl RawAdmin {
    pub(super) fn into_config(self, at: &At<'_>) -> Result<AdminConfig, ConfigError> {
        let token = match self.token {
            None => None,
            Some(raw) => {
                let span = raw.span();
                match ValueSource::from(raw.into_inner()) {
                    ValueSource::Literal(_) => {
                        return Err(ConfigError {
                            line: Some(super::line_of(at.0, span.start)),
                            message: "`admin.token` is a credential; write it as { env = \"VAR\" } instead of a value in the file".into(),
                        });
                    }
                    source => Some(source),
                }
            }
        };
        Ok(AdminConfig { token })
    }
}

/// Identity documents and keys must not cross the network in the clear.
fn check_https_or_loopback(
    at: &At<'_>,
    key: &str,
    url: &Spanned<String>,
) -> Result<(), ConfigError> {
    match super::http_loopback(url.get_ref()) {
        Some(true) => Ok(()),
        _ if url.get_ref().starts_with("https://") => Ok(()),
        _ => Err(at.error(
            url,
            format!(
                "`{key}` = `{}` must be an https:// URL (plain http only on this machine)",
                url.get_ref()
            ),
        )),
    }
}
