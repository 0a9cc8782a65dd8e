//! Writ's own signing keys: the one that signs new writs, and the retired ones that still
//! verify writs issued before a rotation. Keys live in the store so every replica signs
//! and verifies with the same set; each key's id is its RFC 7638 thumbprint.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use rand_core::OsRng;
use serde::Serialize;
use writ_core::config::SigningAlgorithm;
use writ_store::{SigningKey, Store, StoreError};

/// Why a key could not be made, loaded or used. Always Writ's own fault.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("signing key `{kid}`: {message}")]
    Bad { kid: String, message: String },
    #[error("could not generate a key: {0}")]
    Generate(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The key that signs, and every key that verifies.
#[derive(Debug)]
pub struct KeyRing {
    algorithm: SigningAlgorithm,
    current: RwLock<Arc<Keys>>,
}

struct Keys {
    signer: Option<Signer>,
    verifiers: HashMap<String, (Algorithm, DecodingKey)>,
    jwks: JwkSet,
}

/// A JWT part: the JSON of `value`, base64url without padding.
fn json_part(value: &impl Serialize) -> Result<String, serde_json::Error> {
    Ok(URL_SAFE_NO_PAD.encode(serde_json::to_vec(value)?))
}

/// The key new writs are signed with.
struct Signer {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
    /// An Ed25519 key, expanded once: `jsonwebtoken` reads the key from its PKCS#8 form
    /// and derives its public half for every signature, a third of a writ's signing.
    ed25519: Option<ed25519_dalek::SigningKey>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("signer", &self.signer.as_ref().map(|s| &s.kid))
            .field("verifiers", &self.verifiers.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn jwt_algorithm(algorithm: &str) -> Option<Algorithm> {
    match algorithm {
        "EdDSA" => Some(Algorithm::EdDSA),
        "ES256" => Some(Algorithm::ES256),
        _ => None,
    }
}

/// An Ed25519 private key as PKCS#8 v1 PEM (private key only): the form `jsonwebtoken`
/// reads; ed25519-dalek's own encoding is v2, with the public key inside.
pub(crate) fn ed25519_v1_pkcs8(
    key: &ed25519_dalek::SigningKey,
) -> ed25519_dalek::pkcs8::Result<ed25519_dalek::pkcs8::spki::der::zeroize::Zeroizing<String>> {
    ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(Default::default())
}

/// A fresh key pair as a store record (its id is the thumbprint of its public half).
pub fn generate(algorithm: SigningAlgorithm, now: i64) -> Result<SigningKey, KeyError> {
    let pem = match algorithm {
        SigningAlgorithm::EdDSA => {
            ed25519_v1_pkcs8(&ed25519_dalek::SigningKey::generate(&mut OsRng))
                .map_err(|e| KeyError::Generate(e.to_string()))?
                .to_string()
        }
        SigningAlgorithm::ES256 => p256::ecdsa::SigningKey::random(&mut OsRng)
            .to_pkcs8_pem(Default::default())
            .map_err(|e| KeyError::Generate(e.to_string()))?
            .to_string(),
    };
    let (_, jwk) = encoding_key(algorithm.as_str(), &pem, "new")?;
    let kid = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    Ok(SigningKey {
        kid,
        algorithm: algorithm.as_str().to_owned(),
        private_pem: pem,
        created_at: now,
        retired_at: None,
    })
}

/// The signing key and its public JWK (without `kid`).
fn encoding_key(algorithm: &str, pem: &str, kid: &str) -> Result<(EncodingKey, Jwk), KeyError> {
    let bad = |message: String| KeyError::Bad {
        kid: kid.to_owned(),
        message,
    };
    let alg =
        jwt_algorithm(algorithm).ok_or_else(|| bad(format!("unknown algorithm `{algorithm}`")))?;
    let key = match alg {
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
        _ => EncodingKey::from_ec_pem(pem.as_bytes()),
    }
    .map_err(|e| bad(e.to_string()))?;
    let jwk = Jwk::from_encoding_key(&key, alg).map_err(|e| bad(e.to_string()))?;
    Ok((key, jwk))
}

impl KeyRing {
    /// Loads the keys from the store, making a first key of `algorithm` when the store has
    /// no active key of that algorithm (a new install, or a change of `tokens.algorithm`).
    pub async fn load(
        store: &dyn Store,
        algorithm: SigningAlgorithm,
        now: i64,
    ) -> Result<Self, KeyError> {
        let ring = Self {
            algorithm,
            current: RwLock::new(Arc::new(Keys {
                signer: None,
                verifiers: HashMap::new(),
                jwks: JwkSet { keys: Vec::new() },
            })),
        };
        ring.reload(store).await?;
        if ring.snapshot().signer.is_none() {
            store
                .add_signing_key(&generate(algorithm, now)?, now)
                .await?;
            ring.reload(store).await?;
            tracing::info!(
                algorithm = algorithm.as_str(),
                "made a new signing key for writs"
            );
        }
        Ok(ring)
    }

    /// Re-reads the keys (after a rotation, seen in the store's change feed).
    pub async fn reload(&self, store: &dyn Store) -> Result<(), KeyError> {
        let records = store.signing_keys().await?;
        let mut signer = None;
        let mut verifiers = HashMap::new();
        let mut jwks = Vec::new();
        for record in records {
            let (encoding, mut jwk) =
                encoding_key(&record.algorithm, &record.private_pem, &record.kid)?;
            let Some(alg) = jwt_algorithm(&record.algorithm) else {
                continue;
            };
            jwk.common.key_id = Some(record.kid.clone());
            jwk.common.public_key_use = Some(PublicKeyUse::Signature);
            let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| KeyError::Bad {
                kid: record.kid.clone(),
                message: e.to_string(),
            })?;
            verifiers.insert(record.kid.clone(), (alg, decoding));
            jwks.push(jwk);
            if signer.is_none()
                && record.retired_at.is_none()
                && record.algorithm == self.algorithm.as_str()
            {
                let ed25519 = match alg {
                    Algorithm::EdDSA => Some(
                        ed25519_dalek::SigningKey::from_pkcs8_pem(&record.private_pem).map_err(
                            |e| KeyError::Bad {
                                kid: record.kid.clone(),
                                message: e.to_string(),
                            },
                        )?,
                    ),
                    _ => None,
                };
                signer = Some(Signer {
                    kid: record.kid.clone(),
                    alg,
                    key: encoding,
                    ed25519,
                });
            }
        }
        let keys = Keys {
            signer,
            verifiers,
            jwks: JwkSet { keys: jwks },
        };
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(keys);
        }
        Ok(())
    }

    fn snapshot(&self) -> Arc<Keys> {
        match self.current.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Signs `claims` as a JWT with header `typ`.
    pub fn sign(&self, typ: &str, claims: &impl Serialize) -> Result<String, KeyError> {
        let keys = self.snapshot();
        let signer = keys.signer.as_ref().ok_or_else(|| KeyError::Bad {
            kid: String::new(),
            message: "no active signing key".into(),
        })?;
        let mut header = Header::new(signer.alg);
        header.typ = Some(typ.to_owned());
        header.kid = Some(signer.kid.clone());
        let bad = |message: String| KeyError::Bad {
            kid: signer.kid.clone(),
            message,
        };
        let Some(ed25519) = &signer.ed25519 else {
            return jsonwebtoken::encode(&header, claims, &signer.key)
                .map_err(|e| bad(e.to_string()));
        };
        // What `jsonwebtoken::encode` makes (the tests hold this to it), with the key
        // already expanded.
        let header = json_part(&header).map_err(|e| bad(e.to_string()))?;
        let claims = json_part(claims).map_err(|e| bad(e.to_string()))?;
        let mut jwt = format!("{header}.{claims}");
        let signature = ed25519_dalek::Signer::sign(ed25519, jwt.as_bytes());
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(signature.to_bytes()));
        Ok(jwt)
    }

    /// The id of the key new writs are signed with, if there is one.
    pub fn current_kid(&self) -> Option<String> {
        self.snapshot()
            .signer
            .as_ref()
            .map(|signer| signer.kid.clone())
    }

    /// The algorithm and key that verify writs signed with key `kid`.
    pub fn verifier(&self, kid: &str) -> Option<(Algorithm, DecodingKey)> {
        self.snapshot().verifiers.get(kid).cloned()
    }

    /// The public keys, as served at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> JwkSet {
        self.snapshot().jwks.clone()
    }
}

/// Makes a new signing key and retires the others; they keep verifying until
/// [`drop_expired`] removes them once no writ they signed can still be valid.
pub async fn rotate(
    store: &dyn Store,
    algorithm: SigningAlgorithm,
    now: i64,
) -> Result<SigningKey, KeyError> {
    let key = generate(algorithm, now)?;
    store.add_signing_key(&key, now).await?;
    Ok(key)
}

/// Forgets retired keys that retired longer ago than the longest writ lifetime.
pub async fn drop_expired(store: &dyn Store, max_ttl_secs: i64, now: i64) -> Result<u64, KeyError> {
    Ok(store
        .drop_retired_keys(now.saturating_sub(max_ttl_secs))
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ed25519 signatures are deterministic, so the writ signed with the expanded key
    /// must be, byte for byte, the one `jsonwebtoken::encode` signs.
    #[tokio::test]
    async fn a_writ_signed_with_the_expanded_key_is_what_jsonwebtoken_signs() {
        let store = writ_store::SqliteStore::open_in_memory().await.unwrap();
        let ring = KeyRing::load(&store, SigningAlgorithm::EdDSA, 1_000)
            .await
            .unwrap();
        let claims = serde_json::json!({
            "iss": "https://writ.example", "sub": "agt_1", "exp": 2_000, "iat": 1_000,
            "task": "tsk_1", "act": {"sub": "agt_2", "act": {"sub": "agt_3"}},
            "purpose": "quotes \" and \\ and ünïcode",
        });
        let fast = ring.sign("at+jwt", &claims).unwrap();
        let keys = ring.snapshot();
        let signer = keys.signer.as_ref().unwrap();
        assert!(signer.ed25519.is_some());
        let mut header = Header::new(signer.alg);
        header.typ = Some("at+jwt".into());
        header.kid = Some(signer.kid.clone());
        let reference = jsonwebtoken::encode(&header, &claims, &signer.key).unwrap();
        assert_eq!(fast, reference);
        let (alg, key) = ring.verifier(&signer.kid).unwrap();
        let mut validation = jsonwebtoken::Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_aud = false;
        let decoded = jsonwebtoken::decode::<serde_json::Value>(&fast, &key, &validation).unwrap();
        assert_eq!(decoded.claims, claims);
    }

    /// ES256 signatures are not deterministic: those writs are signed by `jsonwebtoken`.
    #[tokio::test]
    async fn es256_writs_are_signed_and_verify() {
        let store = writ_store::SqliteStore::open_in_memory().await.unwrap();
        let ring = KeyRing::load(&store, SigningAlgorithm::ES256, 1_000)
            .await
            .unwrap();
        let claims = serde_json::json!({"sub": "agt_1", "exp": 2_000});
        let jwt = ring.sign("at+jwt", &claims).unwrap();
        let kid = ring.current_kid().unwrap();
        assert!(ring.snapshot().signer.as_ref().unwrap().ed25519.is_none());
        let (alg, key) = ring.verifier(&kid).unwrap();
        let mut validation = jsonwebtoken::Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_aud = false;
        let decoded = jsonwebtoken::decode::<serde_json::Value>(&jwt, &key, &validation).unwrap();
        assert_eq!(decoded.claims, claims);
    }
}
