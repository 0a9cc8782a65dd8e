//! The agent's side: a key file made by `writ agent create`, and the two JWTs an agent
//! signs with it — its RFC 7523 identity assertion and its RFC 9449 DPoP proofs. Used by
//! the CLI (`writ task begin`), `writ demo`, `writ bench` and the tests.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand_core::OsRng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use writ_core::config::SigningAlgorithm;

/// Why a key could not be made, read, written or used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AgentKeyError(String);

/// The file `writ agent create --out` writes: who the agent is and its private key.
#[derive(Serialize, Deserialize)]
struct KeyFile {
    agent_id: String,
    algorithm: String,
    private_key: String,
}

/// An agent's private key, with its id.
pub struct AgentKey {
    pub agent_id: String,
    pub algorithm: SigningAlgorithm,
    pem: String,
    encoding: EncodingKey,
    jwk: Jwk,
}

impl std::fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentKey")
            .field("agent_id", &self.agent_id)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

fn jwt_algorithm(algorithm: SigningAlgorithm) -> Algorithm {
    match algorithm {
        SigningAlgorithm::EdDSA => Algorithm::EdDSA,
        SigningAlgorithm::ES256 => Algorithm::ES256,
    }
}

impl AgentKey {
    /// A new key pair for `agent_id`, and its public half as PEM for the registry.
    pub fn generate(
        agent_id: &str,
        algorithm: SigningAlgorithm,
    ) -> Result<(Self, String), AgentKeyError> {
        let err = |e: String| AgentKeyError(format!("could not generate a key: {e}"));
        let (pem, public_pem) = match algorithm {
            SigningAlgorithm::EdDSA => {
                let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
                (
                    super::keys::ed25519_v1_pkcs8(&key)
                        .map_err(|e| err(e.to_string()))?
                        .to_string(),
                    key.verifying_key()
                        .to_public_key_pem(Default::default())
                        .map_err(|e| err(e.to_string()))?,
                )
            }
            SigningAlgorithm::ES256 => {
                let key = p256::SecretKey::random(&mut OsRng);
                (
                    key.to_pkcs8_pem(Default::default())
                        .map_err(|e| err(e.to_string()))?
                        .to_string(),
                    key.public_key()
                        .to_public_key_pem(Default::default())
                        .map_err(|e| err(e.to_string()))?,
                )
            }
        };
        Ok((Self::from_pem(agent_id, algorithm, pem)?, public_pem))
    }

    fn from_pem(
        agent_id: &str,
        algorithm: SigningAlgorithm,
        pem: String,
    ) -> Result<Self, AgentKeyError> {
        let err = |e: jsonwebtoken::errors::Error| {
            AgentKeyError(format!("the private key is unusable: {e}"))
        };
        let encoding = match algorithm {
            SigningAlgorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
            SigningAlgorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
        }
        .map_err(err)?;
        let jwk = Jwk::from_encoding_key(&encoding, jwt_algorithm(algorithm)).map_err(err)?;
        Ok(Self {
            agent_id: agent_id.to_owned(),
            algorithm,
            pem,
            encoding,
            jwk,
        })
    }

    /// Reads a key file written by [`AgentKey::write`].
    pub fn read(path: &Path) -> Result<Self, AgentKeyError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            AgentKeyError(format!("could not read key file `{}`: {e}", path.display()))
        })?;
        let file: KeyFile = serde_json::from_str(&text).map_err(|e| {
            AgentKeyError(format!(
                "`{}` is not a Writ agent key file: {e}",
                path.display()
            ))
        })?;
        let algorithm = match file.algorithm.as_str() {
            "EdDSA" => SigningAlgorithm::EdDSA,
            "ES256" => SigningAlgorithm::ES256,
            other => {
                return Err(AgentKeyError(format!(
                    "`{}`: unknown algorithm `{other}`",
                    path.display()
                )));
            }
        };
        Self::from_pem(&file.agent_id, algorithm, file.private_key)
    }

    /// Writes the key file, readable by its owner only (mode 0600), refusing to overwrite.
    pub fn write(&self, path: &Path) -> Result<(), AgentKeyError> {
        use std::io::Write as _;
        let file = KeyFile {
            agent_id: self.agent_id.clone(),
            algorithm: self.algorithm.as_str().to_owned(),
            private_key: self.pem.clone(),
        };
        let text = serde_json::to_string_pretty(&file).map_err(|e| AgentKeyError(e.to_string()))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut out = options.open(path).map_err(|e| {
            AgentKeyError(format!(
                "could not create key file `{}`: {e}",
                path.display()
            ))
        })?;
        out.write_all(text.as_bytes())
            .and_then(|()| out.write_all(b"\n"))
            .map_err(|e| {
                AgentKeyError(format!(
                    "could not write key file `{}`: {e}",
                    path.display()
                ))
            })
    }

    /// The RFC 7638 thumbprint of the public key: the `jkt` of writs bound to it.
    pub fn thumbprint(&self) -> String {
        self.jwk
            .thumbprint(ThumbprintHash::SHA256)
            .unwrap_or_default()
    }

    fn sign(
        &self,
        typ: &str,
        jwk: bool,
        claims: &serde_json::Value,
    ) -> Result<String, AgentKeyError> {
        let mut header = Header::new(jwt_algorithm(self.algorithm));
        header.typ = Some(typ.to_owned());
        if jwk {
            header.jwk = Some(self.jwk.clone());
        }
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| AgentKeyError(format!("could not sign: {e}")))
    }

    /// An identity assertion for Writ (`aud` = Writ's issuer URL), good for `lifetime_secs`
    /// and for one use.
    pub fn assertion(&self, audience: &str, lifetime_secs: i64) -> Result<String, AgentKeyError> {
        let now = super::now();
        self.sign(
            "JWT",
            false,
            &json!({
                "iss": self.agent_id,
                "sub": self.agent_id,
                "aud": audience,
                "iat": now,
                "exp": now + lifetime_secs,
                "jti": uuid::Uuid::new_v4().simple().to_string(),
            }),
        )
    }

    /// A DPoP proof for one request; `access_token` is the writ sent with it, if any.
    pub fn dpop_proof(
        &self,
        method: &str,
        url: &str,
        access_token: Option<&str>,
        nonce: Option<&str>,
    ) -> Result<String, AgentKeyError> {
        let mut claims = json!({
            "jti": uuid::Uuid::new_v4().simple().to_string(),
            "htm": method,
            "htu": url,
            "iat": super::now(),
        });
        if let Some(map) = claims.as_object_mut() {
            if let Some(token) = access_token {
                map.insert(
                    "ath".into(),
                    URL_SAFE_NO_PAD
                        .encode(Sha256::digest(token.as_bytes()))
                        .into(),
                );
            }
            if let Some(nonce) = nonce {
                map.insert("nonce".into(), nonce.into());
            }
        }
        self.sign("dpop+jwt", true, &claims)
    }
}

/// A fresh agent id: `agt_` and 32 hex digits.
pub fn new_agent_id() -> String {
    format!("agt_{}", uuid::Uuid::new_v4().simple())
}

/// The algorithm of a public key in PEM (SubjectPublicKeyInfo), for `writ agent add`.
pub fn public_key_algorithm(pem: &str) -> Result<SigningAlgorithm, AgentKeyError> {
    use ed25519_dalek::pkcs8::DecodePublicKey as _;
    if ed25519_dalek::VerifyingKey::from_public_key_pem(pem).is_ok() {
        return Ok(SigningAlgorithm::EdDSA);
    }
    if p256::PublicKey::from_public_key_pem(pem).is_ok() {
        return Ok(SigningAlgorithm::ES256);
    }
    Err(AgentKeyError(
        "the public key must be an Ed25519 or P-256 key in PEM (`-----BEGIN PUBLIC KEY-----`)"
            .into(),
    ))
}
