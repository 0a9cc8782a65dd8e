//! What the authentication stage costs per request: checking a writ (the first time a
//! gateway sees it, and every time after, from the cache) and checking a DPoP proof.
//!
//! - `writ/first_sight`: an Ed25519-signed writ never seen before: header, key lookup,
//!   signature and claims;
//! - `writ/cached`: the same writ again, as every request after a task's first is;
//! - `dpop_proof/check`: a fresh proof (signed outside the timing) for one request:
//!   header, JWK, signature, method, URL, age, `ath` and the replay cache.
//!
//! `cargo bench -p writ-gateway --bench writs`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmarks fail loudly on setup errors"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use serde_json::json;
use writ_agent::AgentKey;
use writ_core::config::SigningAlgorithm;
use writ_gateway::token::dpop::ProofChecker;
use writ_gateway::token::keys::KeyRing;
use writ_gateway::token::writs::{WRIT_TYP, WritVerifier};
use writ_gateway::token::{ProofTarget, now};
use writ_store::{SqliteStore, Store};

const ISSUER: &str = "http://127.0.0.1:8080";
const AUDIENCE: &str = "http://127.0.0.1:8080/mcp";

/// A writ as the token service issues one, with a unique `jti` so it is never cached.
fn claims(n: u64) -> serde_json::Value {
    let now = now();
    json!({
        "iss": ISSUER, "sub": "agt_0123456789abcdef0123456789abcdef", "aud": AUDIENCE,
        "exp": now + 3600, "iat": now, "jti": format!("wr_{n:032}"),
        "client_id": "agt_0123456789abcdef0123456789abcdef",
        "task": "tsk_0123456789abcdef0123456789abcdef",
        "authorization_details": [{"type": "writ_task", "tools": ["crm.*"], "data_classes": ["pii"]}],
    })
}

fn writs(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = std::env::temp_dir().join(format!("writ-writs-bench-{}", std::process::id()));
    let keys: Arc<KeyRing> = runtime.block_on(async {
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.join("writ.db")).await.unwrap());
        Arc::new(
            KeyRing::load(store.as_ref(), SigningAlgorithm::EdDSA, now())
                .await
                .unwrap(),
        )
    });
    let verifier = WritVerifier::new(ISSUER, AUDIENCE, 30);
    let mut group = c.benchmark_group("writ");
    let mut n = 0;
    group.bench_function("first_sight", |b| {
        b.iter_batched(
            || {
                n += 1;
                keys.sign(WRIT_TYP, &claims(n)).unwrap()
            },
            |writ| black_box(verifier.verify(&keys, &writ, now()).unwrap()),
            BatchSize::SmallInput,
        );
    });
    let writ = keys.sign(WRIT_TYP, &claims(0)).unwrap();
    verifier.verify(&keys, &writ, now()).unwrap();
    group.bench_function("cached", |b| {
        b.iter(|| black_box(verifier.verify(&keys, &writ, now()).unwrap()));
    });
    group.finish();

    let (agent, _) = AgentKey::generate(
        "agt_0123456789abcdef0123456789abcdef",
        SigningAlgorithm::EdDSA,
    )
    .unwrap();
    let checker = ProofChecker::new(60, 30, false);
    c.bench_function("dpop_proof/check", |b| {
        b.iter_batched(
            || {
                agent
                    .dpop_proof("POST", AUDIENCE, Some(&writ), None)
                    .unwrap()
            },
            |proof| {
                let target = ProofTarget {
                    method: "POST",
                    url: AUDIENCE,
                    access_token: Some(&writ),
                };
                black_box(checker.check(&proof, target, now()).unwrap())
            },
            BatchSize::SmallInput,
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = writs
}
criterion_main!(benches);
