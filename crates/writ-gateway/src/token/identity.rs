//! Who is asking: an agent's own assertion (RFC 7523, a key registered in Writ or published
//! at the agent's `jwks_url`), a JWT from a trusted OIDC issuer, or a SPIFFE JWT-SVID.
//!
//! The unverified claims are read only to choose the verifier; nothing in them is trusted
//! until that verifier has checked the signature with a key Writ chose, for an algorithm
//! Writ chose. The token's own `alg` never picks the key.

use std::collections::HashSet;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::Value;
use writ_core::config::{IdentityConfig, OidcIssuer, SpiffeTrust};
use writ_store::{Agent, AgentCredential, OneTime, Store};

use super::jwks::{BundleFile, RemoteKeySets};
use super::jwt::{describe, lifetime_of, validation, within_lifetime};

/// `iss` of external identities recorded for SPIFFE IDs.
pub const SPIFFE_ISSUER: &str = "spiffe";

/// The algorithms JWT-SVIDs may use (the SPIFFE JWT-SVID specification: RS, ES and PS).
const SVID_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// The algorithms accepted from OIDC issuers and agents' published keys.
const ASYMMETRIC: &[Algorithm] = &[
    Algorithm::EdDSA,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// An agent that proved who it is, and how.
#[derive(Debug, Clone)]
pub struct Proven {
    pub agent: Agent,
    /// `key`, `jwks`, `oidc` or `spiffe_jwt`.
    pub proof: &'static str,
    /// The single-use identifier of the proof (an assertion's `jti`), not yet spent: the
    /// proof holds only once it is, with the task it begins
    /// ([`writ_store::TaskStore::begin_tasks`]) or alone ([`Identities::spend`]).
    pub once: Option<OneTime>,
}

/// Why an assertion is refused the second time.
pub fn replayed() -> IdentityError {
    IdentityError(
        "the assertion was used before (`jti` replay); sign a new one for every request".into(),
    )
}

/// Why an identity was not accepted; said to the agent as the `error_description`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct IdentityError(pub String);

/// Internal failures (store, fetch) are reported without detail and logged.
fn internal(context: &str, err: impl std::fmt::Display) -> IdentityError {
    tracing::error!(%err, "{context}");
    IdentityError(format!("{context}; see the gateway log"))
}

#[derive(Debug)]
pub struct Identities {
    config: IdentityConfig,
    /// The audiences an agent's own assertion may name: Writ's issuer and token endpoint.
    audiences: HashSet<String>,
    issuer: String,
    skew_secs: u64,
    remote: RemoteKeySets,
    bundles: Vec<BundleFile>,
    store: Arc<dyn Store>,
}

#[derive(Deserialize)]
struct Peek {
    iss: Option<String>,
    sub: Option<String>,
}

#[derive(Deserialize)]
struct AssertionClaims {
    exp: i64,
    nbf: Option<i64>,
    iat: Option<i64>,
    jti: Option<String>,
}

impl Identities {
    pub fn new(
        config: IdentityConfig,
        issuer: &str,
        token_endpoint: &str,
        skew_secs: u64,
        store: Arc<dyn Store>,
    ) -> Self {
        let bundles = config
            .spiffe
            .iter()
            .map(|s| BundleFile::new(&s.bundle))
            .collect();
        Self {
            audiences: [issuer.to_owned(), token_endpoint.to_owned()].into(),
            issuer: issuer.to_owned(),
            skew_secs,
            remote: RemoteKeySets::new(),
            bundles,
            config,
            store,
        }
    }

    /// Verifies an identity token and finds the agent it names.
    pub async fn prove(&self, token: &str, now: i64) -> Result<Proven, IdentityError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            IdentityError("the identity token is not a signed JWT with an accepted algorithm (`alg: none` and unknown algorithms are refused)".into())
        })?;
        let peek = peek_claims(token)?;
        let sub = peek.sub.clone().unwrap_or_default();
        if sub.starts_with("spiffe://") {
            return self.prove_spiffe(token, &header, &sub, now).await;
        }
        let iss = peek.iss.unwrap_or_default();
        if let Some(oidc) = self.config.oidc.iter().find(|o| o.issuer == iss) {
            return self.prove_oidc(token, &header, oidc, now).await;
        }
        if iss.starts_with("agt_") {
            return self.prove_assertion(token, &header, &iss, now).await;
        }
        Err(IdentityError(format!(
            "the identity token's issuer `{iss}` is neither a registered agent nor a trusted identity provider"
        )))
    }

    /// Spends `proven`'s single-use identifier on its own, for a proof that begins no
    /// task: a replay is refused.
    pub async fn spend(&self, proven: &Proven, now: i64) -> Result<(), IdentityError> {
        let Some(once) = &proven.once else {
            return Ok(());
        };
        let first_use = self
            .store
            .remember_once(&once.scope, &once.id, once.expires_at, now)
            .await
            .map_err(|e| internal("could not check the assertion for replay", e))?;
        if first_use { Ok(()) } else { Err(replayed()) }
    }

    /// RFC 7523: an agent signs its own short-lived, single-use assertion.
    async fn prove_assertion(
        &self,
        token: &str,
        header: &jsonwebtoken::Header,
        agent_id: &str,
        now: i64,
    ) -> Result<Proven, IdentityError> {
        let agent = self
            .store
            .agent(agent_id)
            .await
            .map_err(|e| internal("could not read the agent registry", e))?
            .filter(|a| a.id == agent_id)
            .ok_or_else(|| IdentityError(format!("no agent `{agent_id}` is registered")))?;
        let (algorithm, key, proof) = match &agent.credential {
            AgentCredential::PublicKey { algorithm, pem } => {
                let (alg, key) = registered_key(algorithm, pem)
                    .map_err(|e| internal("a registered agent key is unusable", e))?;
                (alg, key, "key")
            }
            AgentCredential::JwksUrl { url } => {
                let jwk = self
                    .remote
                    .key(url, header.kid.as_deref())
                    .await
                    .map_err(IdentityError)?;
                let alg = algorithm_of(&jwk, header.alg, ASYMMETRIC)?;
                let key = DecodingKey::from_jwk(&jwk).map_err(|e| {
                    IdentityError(format!("the agent's published key is unusable: {e}"))
                })?;
                (alg, key, "jwks")
            }
            AgentCredential::External { .. } => {
                return Err(IdentityError(format!(
                    "agent `{}` proves itself through its identity provider, not with its own assertion",
                    agent.name
                )));
            }
        };
        if header.alg != algorithm {
            return Err(IdentityError(format!(
                "the assertion is signed with `{:?}` but agent `{}` is registered with `{:?}`",
                header.alg, agent.name, algorithm
            )));
        }
        let mut validation = validation(algorithm);
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        validation.set_issuer(&[agent_id]);
        validation.sub = Some(agent_id.to_owned());
        validation.aud = Some(self.audiences.clone());
        let claims = jsonwebtoken::decode::<AssertionClaims>(token, &key, &validation)
            .map_err(|e| IdentityError(format!("the assertion was refused: {}", describe(&e))))?
            .claims;
        within_lifetime(claims.exp, claims.nbf, now, self.skew_secs)
            .map_err(|e| IdentityError(format!("the assertion was refused: {e}")))?;
        let skew = i64::try_from(self.skew_secs).unwrap_or(0);
        let lifetime = claims.exp - claims.iat.unwrap_or(now).min(now);
        let max = i64::try_from(self.config.assertion_max_lifetime.as_secs()).unwrap_or(i64::MAX);
        if lifetime > max + skew {
            return Err(IdentityError(format!(
                "the assertion lives {lifetime} s; at most {max} s is accepted"
            )));
        }
        if claims.iat.is_some_and(|iat| iat > now + skew) {
            return Err(IdentityError(
                "the assertion's `iat` is in the future".into(),
            ));
        }
        let jti = claims
            .jti
            .filter(|j| !j.is_empty() && j.len() <= 256)
            .ok_or_else(|| {
                IdentityError("the assertion needs a `jti` (1 to 256 characters)".into())
            })?;
        // Spent by whoever acts on the proof: with the task it begins, or alone.
        let once = OneTime {
            scope: "assertion".to_owned(),
            id: format!("{agent_id}:{jti}"),
            expires_at: claims.exp + skew,
        };
        Ok(Proven {
            agent,
            proof,
            once: Some(once),
        })
    }

    async fn prove_oidc(
        &self,
        token: &str,
        header: &jsonwebtoken::Header,
        oidc: &OidcIssuer,
        now: i64,
    ) -> Result<Proven, IdentityError> {
        let jwk = self
            .remote
            .key(&oidc.jwks_url, header.kid.as_deref())
            .await
            .map_err(IdentityError)?;
        let alg = algorithm_of(&jwk, header.alg, ASYMMETRIC)?;
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|e| IdentityError(format!("the issuer's key is unusable: {e}")))?;
        let mut validation = validation(alg);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&[&oidc.issuer]);
        validation.set_audience(&[&oidc.audience]);
        let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|e| IdentityError(format!("the OIDC token was refused: {}", describe(&e))))?
            .claims;
        lifetime_of(&claims)
            .and_then(|(exp, nbf)| within_lifetime(exp, nbf, now, self.skew_secs))
            .map_err(|e| IdentityError(format!("the OIDC token was refused: {e}")))?;
        let subject = claims
            .get(&oidc.agent_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                IdentityError(format!(
                    "the OIDC token has no `{}` claim naming the agent",
                    oidc.agent_claim
                ))
            })?;
        self.external_agent(&oidc.issuer, subject, "oidc").await
    }

    /// JWT-SVID rules: RS/ES/PS only, `aud` required and holding exactly one audience
    /// (Writ's), `exp` required, `sub` a SPIFFE ID in a configured trust domain.
    async fn prove_spiffe(
        &self,
        token: &str,
        header: &jsonwebtoken::Header,
        sub: &str,
        now: i64,
    ) -> Result<Proven, IdentityError> {
        let domain = spiffe_trust_domain(sub)
            .ok_or_else(|| IdentityError(format!("`{sub}` is not a valid SPIFFE ID")))?;
        let (trust, bundle) = self
            .config
            .spiffe
            .iter()
            .zip(&self.bundles)
            .find(|(t, _)| t.trust_domain == domain)
            .ok_or_else(|| {
                IdentityError(format!("SPIFFE trust domain `{domain}` is not trusted"))
            })?;
        if !SVID_ALGORITHMS.contains(&header.alg) {
            return Err(IdentityError(format!(
                "JWT-SVIDs must be signed with an RS, ES or PS algorithm, not `{:?}`",
                header.alg
            )));
        }
        let jwk = bundle.key(header.kid.as_deref()).map_err(IdentityError)?;
        let alg = algorithm_of(&jwk, header.alg, SVID_ALGORITHMS)?;
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|e| IdentityError(format!("the bundle key is unusable: {e}")))?;
        let audience = audience_of(trust, &self.issuer);
        let mut validation = validation(alg);
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        validation.set_audience(&[audience]);
        let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|e| IdentityError(format!("the JWT-SVID was refused: {}", describe(&e))))?
            .claims;
        lifetime_of(&claims)
            .and_then(|(exp, nbf)| within_lifetime(exp, nbf, now, self.skew_secs))
            .map_err(|e| IdentityError(format!("the JWT-SVID was refused: {e}")))?;
        if claims
            .get("aud")
            .and_then(Value::as_array)
            .is_some_and(|a| a.len() != 1)
        {
            return Err(IdentityError(
                "a JWT-SVID must carry exactly one audience".into(),
            ));
        }
        self.external_agent(SPIFFE_ISSUER, sub, "spiffe_jwt").await
    }

    /// The registered agent for an external identity; with `require_registered = false`,
    /// an unregistered identity becomes an agent named by it, known for this task only.
    async fn external_agent(
        &self,
        issuer: &str,
        subject: &str,
        proof: &'static str,
    ) -> Result<Proven, IdentityError> {
        let found = self
            .store
            .agent_by_external(issuer, subject)
            .await
            .map_err(|e| internal("could not read the agent registry", e))?;
        let agent = match found {
            Some(agent) => agent,
            None if !self.config.require_registered => Agent {
                id: subject.to_owned(),
                name: subject.to_owned(),
                team: None,
                owner: None,
                credential: AgentCredential::External {
                    issuer: issuer.to_owned(),
                    subject: subject.to_owned(),
                },
                disabled: false,
                created_at: 0,
            },
            None => {
                return Err(IdentityError(format!(
                    "`{subject}` is not registered as an agent (`identity.require_registered` is on); register it with `writ agent add`"
                )));
            }
        };
        Ok(Proven {
            agent,
            proof,
            once: None,
        })
    }
}

fn audience_of<'t>(trust: &'t SpiffeTrust, issuer: &'t str) -> &'t str {
    trust.audience.as_deref().unwrap_or(issuer)
}

/// The trust domain of a SPIFFE ID, when it is well formed.
pub fn spiffe_trust_domain(id: &str) -> Option<&str> {
    let rest = id.strip_prefix("spiffe://")?;
    let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
    let domain_ok = !domain.is_empty()
        && domain.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        });
    let path_ok = path.split('/').all(|segment| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    }) || path.is_empty();
    (domain_ok && path_ok && !id.contains(['?', '#', '%'])).then_some(domain)
}

fn peek_claims(token: &str) -> Result<Peek, IdentityError> {
    token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|p| serde_json::from_slice(&p).ok())
        .ok_or_else(|| IdentityError("the identity token's claims are not readable JSON".into()))
}

/// The algorithm to verify with: the token's, only when the key's type agrees with it,
/// the key does not pin another, and it is on the allowed list.
fn algorithm_of(
    jwk: &Jwk,
    asked: Algorithm,
    allowed: &[Algorithm],
) -> Result<Algorithm, IdentityError> {
    if !allowed.contains(&asked) {
        return Err(IdentityError(format!(
            "algorithm `{asked:?}` is not accepted here"
        )));
    }
    if let Some(pinned) = jwk.common.key_algorithm
        && pinned != asked.into()
    {
        return Err(IdentityError(format!(
            "the token says `{asked:?}` but its key is for `{pinned:?}`"
        )));
    }
    let fits = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => matches!(
            asked,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ),
        AlgorithmParameters::EllipticCurve(ec) => matches!(
            (&ec.curve, asked),
            (EllipticCurve::P256, Algorithm::ES256) | (EllipticCurve::P384, Algorithm::ES384)
        ),
        AlgorithmParameters::OctetKeyPair(_) => asked == Algorithm::EdDSA,
        // Symmetric keys (and kinds this version does not know) never verify an identity.
        _ => false,
    };
    if fits {
        Ok(asked)
    } else {
        Err(IdentityError(format!(
            "the key does not fit algorithm `{asked:?}`"
        )))
    }
}

/// A registered public key (PEM) and the one algorithm it verifies.
pub fn registered_key(algorithm: &str, pem: &str) -> Result<(Algorithm, DecodingKey), String> {
    match algorithm {
        "EdDSA" => DecodingKey::from_ed_pem(pem.as_bytes())
            .map(|k| (Algorithm::EdDSA, k))
            .map_err(|e| e.to_string()),
        "ES256" => DecodingKey::from_ec_pem(pem.as_bytes())
            .map(|k| (Algorithm::ES256, k))
            .map_err(|e| e.to_string()),
        other => Err(format!("unknown key algorithm `{other}`")),
    }
}
