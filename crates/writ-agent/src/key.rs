//! An agent's key file, made by `writ agent create`, and the two JWTs an agent signs with
//! it: its RFC 7523 identity assertion and its RFC 9449 DPoP proofs.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

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

/// Seconds since the Unix epoch.
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// An Ed25519 private key as PKCS#8 v1 PEM (private key only): the form `jsonwebtoken`
/// reads; ed25519-dalek's own encoding is v2, with the public key inside. (The gateway
/// has the same helper for its own signing keys; this crate does not depend on it.)
fn ed25519_v1_pkcs8(
    key: &ed25519_dalek::SigningKey,
) -> ed25519_dalek::pkcs8::Result<ed25519_dalek::pkcs8::spki::der::zeroize::Zeroizing<String>> {
    ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(Default::default())
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
                    ed25519_v1_pkcs8(&key)
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
        let now = now();
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
            "iat": now(),
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

#[cfg(test)]
mod tests {
    use jsonwebtoken::{DecodingKey, Validation};

    use super::*;

    const ALGORITHMS: [SigningAlgorithm; 2] = [SigningAlgorithm::EdDSA, SigningAlgorithm::ES256];

    fn temp_path(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!(
            "writ-agent-{name}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ))
    }

    fn decoding_key(algorithm: SigningAlgorithm, public_pem: &str) -> DecodingKey {
        match algorithm {
            SigningAlgorithm::EdDSA => DecodingKey::from_ed_pem(public_pem.as_bytes()).unwrap(),
            SigningAlgorithm::ES256 => DecodingKey::from_ec_pem(public_pem.as_bytes()).unwrap(),
        }
    }

    #[test]
    fn a_key_file_reads_back_as_the_same_key() {
        for algorithm in ALGORITHMS {
            let id = new_agent_id();
            let (key, _) = AgentKey::generate(&id, algorithm).unwrap();
            let path = temp_path("roundtrip");
            key.write(&path).unwrap();
            let read = AgentKey::read(&path).unwrap();
            assert_eq!(read.agent_id, id);
            assert_eq!(read.algorithm, algorithm);
            assert_eq!(read.thumbprint(), key.thumbprint());
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = std::fs::metadata(&path).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600);
            }
            let again = key.write(&path).unwrap_err().to_string();
            assert!(again.contains("could not create key file"), "{again}");
            std::fs::remove_file(&path).unwrap();
        }
    }

    #[test]
    fn a_file_that_is_not_a_key_file_is_refused() {
        let path = temp_path("not-a-key");
        std::fs::write(&path, "{}").unwrap();
        let err = AgentKey::read(&path).unwrap_err().to_string();
        assert!(err.contains("is not a Writ agent key file"), "{err}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn the_public_half_names_its_algorithm() {
        for algorithm in ALGORITHMS {
            let (_, public_pem) = AgentKey::generate(&new_agent_id(), algorithm).unwrap();
            assert_eq!(public_key_algorithm(&public_pem).unwrap(), algorithm);
        }
        assert!(public_key_algorithm("not a key").is_err());
    }

    #[test]
    fn an_assertion_verifies_with_the_registered_public_key() {
        for algorithm in ALGORITHMS {
            let id = new_agent_id();
            let (key, public_pem) = AgentKey::generate(&id, algorithm).unwrap();
            let assertion = key.assertion("https://writ.test", 60).unwrap();
            let mut validation = Validation::new(jwt_algorithm(algorithm));
            validation.set_audience(&["https://writ.test"]);
            let claims = jsonwebtoken::decode::<serde_json::Value>(
                &assertion,
                &decoding_key(algorithm, &public_pem),
                &validation,
            )
            .unwrap()
            .claims;
            assert_eq!(claims["iss"], id.as_str());
            assert_eq!(claims["sub"], id.as_str());
            assert_eq!(
                claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
                60
            );
        }
    }

    #[test]
    fn a_dpop_proof_carries_its_key_and_binds_the_token() {
        let (key, public_pem) =
            AgentKey::generate(&new_agent_id(), SigningAlgorithm::ES256).unwrap();
        let proof = key
            .dpop_proof("POST", "https://writ.test/mcp", Some("a-writ"), Some("n1"))
            .unwrap();
        let header = jsonwebtoken::decode_header(&proof).unwrap();
        assert_eq!(header.typ.as_deref(), Some("dpop+jwt"));
        let jwk = header.jwk.unwrap();
        assert_eq!(
            jwk.thumbprint(ThumbprintHash::SHA256).unwrap(),
            key.thumbprint()
        );
        let mut validation = Validation::new(Algorithm::ES256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        let claims = jsonwebtoken::decode::<serde_json::Value>(
            &proof,
            &decoding_key(SigningAlgorithm::ES256, &public_pem),
            &validation,
        )
        .unwrap()
        .claims;
        assert_eq!(claims["htm"], "POST");
        assert_eq!(claims["htu"], "https://writ.test/mcp");
        assert_eq!(claims["nonce"], "n1");
        assert_eq!(
            claims["ath"],
            URL_SAFE_NO_PAD.encode(Sha256::digest(b"a-writ")).as_str()
        );
    }
}
