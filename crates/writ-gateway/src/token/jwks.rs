//! Key sets published by others: OIDC issuers and agents (`jwks_url`), fetched over HTTP and
//! cached; SPIFFE JWT bundles, read from a file and re-read when it changes.
//!
//! An unknown `kid` triggers one refetch (the issuer may have rotated), but no more often
//! than [`REFETCH_AFTER`], so tokens with made-up key ids cannot make Writ hammer an issuer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::jwk::{Jwk, JwkSet};

/// How long a fetched key set is used before it is fetched again.
const FRESH_FOR: Duration = Duration::from_secs(300);
/// The shortest time between two fetches of one URL: an issuer's rotation is picked up
/// within this, and made-up key ids cost the issuer at most one fetch per interval.
const REFETCH_AFTER: Duration = Duration::from_secs(2);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A key set larger than this is not a key set.
const MAX_JWKS_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone)]
struct Fetched {
    set: Arc<JwkSet>,
    at: Instant,
}

/// Key sets fetched over HTTP, by URL.
#[derive(Debug)]
pub struct RemoteKeySets {
    client: reqwest::Client,
    sets: Mutex<HashMap<String, Fetched>>,
    /// One fetch per URL at a time; others wait for its answer.
    fetching: tokio::sync::Mutex<()>,
}

impl RemoteKeySets {
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            client,
            sets: Mutex::default(),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self, url: &str) -> Option<Fetched> {
        self.sets.lock().ok()?.get(url).cloned()
    }

    /// The key `kid` of the set at `url` (the only key, when `kid` is `None` and the set
    /// has exactly one).
    pub async fn key(&self, url: &str, kid: Option<&str>) -> Result<Jwk, String> {
        if let Some(fetched) = self.cached(url)
            && let Some(key) = pick(&fetched.set, kid)
            && fetched.at.elapsed() < FRESH_FOR
        {
            return Ok(key);
        }
        let _one_at_a_time = self.fetching.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(fetched) = self.cached(url) {
            let found = pick(&fetched.set, kid);
            if fetched.at.elapsed() < REFETCH_AFTER
                || (found.is_some() && fetched.at.elapsed() < FRESH_FOR)
            {
                return found.ok_or_else(|| unknown_kid(url, kid));
            }
        }
        let set = Arc::new(self.fetch(url).await?);
        let found = pick(&set, kid);
        if let Ok(mut sets) = self.sets.lock() {
            sets.insert(
                url.to_owned(),
                Fetched {
                    set,
                    at: Instant::now(),
                },
            );
        }
        found.ok_or_else(|| unknown_kid(url, kid))
    }

    async fn fetch(&self, url: &str) -> Result<JwkSet, String> {
        let response = self
            .client
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("could not fetch keys from `{url}`: {e}"))?;
        if !response.status().is_success() {
            return Err(format!(
                "keys at `{url}` answered HTTP {}",
                response.status()
            ));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("could not read keys from `{url}`: {e}"))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(format!(
                "keys at `{url}` are larger than {MAX_JWKS_BYTES} bytes"
            ));
        }
        parse_set(&body).map_err(|e| format!("keys at `{url}`: {e}"))
    }
}

impl Default for RemoteKeySets {
    fn default() -> Self {
        Self::new()
    }
}

/// A JWK set whose keys Writ cannot use are skipped, not fatal: issuers publish
/// encryption keys and algorithms Writ does not take beside their signing keys.
fn parse_set(body: &[u8]) -> Result<JwkSet, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let keys = value
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or("no `keys` array")?;
    let keys = keys
        .iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .collect();
    Ok(JwkSet { keys })
}

fn pick(set: &JwkSet, kid: Option<&str>) -> Option<Jwk> {
    match kid {
        Some(kid) => set.find(kid).cloned(),
        None => match set.keys.as_slice() {
            [only] => Some(only.clone()),
            _ => None,
        },
    }
}

fn unknown_kid(source: &str, kid: Option<&str>) -> String {
    match kid {
        Some(kid) => format!("no key `{kid}` in the keys of `{source}`"),
        None => format!("the token names no `kid` and `{source}` has more than one key"),
    }
}

/// A SPIFFE JWT bundle on disk, re-read when its modification time changes.
#[derive(Debug)]
pub struct BundleFile {
    path: PathBuf,
    loaded: Mutex<Option<(SystemTime, Arc<JwkSet>)>>,
}

impl BundleFile {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            loaded: Mutex::new(None),
        }
    }

    pub fn key(&self, kid: Option<&str>) -> Result<Jwk, String> {
        let source = self.path.display().to_string();
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .map_err(|e| format!("SPIFFE bundle `{source}`: {e}"))?;
        let mut loaded = self
            .loaded
            .lock()
            .map_err(|_| "SPIFFE bundle cache is unusable".to_owned())?;
        let set = match loaded.as_ref() {
            Some((at, set)) if *at == modified => set.clone(),
            _ => {
                let body = std::fs::read(&self.path)
                    .map_err(|e| format!("SPIFFE bundle `{source}`: {e}"))?;
                let set = Arc::new(
                    parse_set(&body).map_err(|e| format!("SPIFFE bundle `{source}`: {e}"))?,
                );
                *loaded = Some((modified, set.clone()));
                set
            }
        };
        pick(&set, kid).ok_or_else(|| unknown_kid(&source, kid))
    }
}
