//! The policy set in force, and keeping it current.
//!
//! The set is loaded from `[policy] dir` at start and re-read when a file there changes
//! (checked every second). A new set replaces the old one in one pointer swap: a request
//! takes the set once and decides with it throughout, so no request ever sees half of
//! a reload. A folder that fails to load keeps the old set in force, and the log says
//! which file, which policy and why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use writ_core::clock::Clock;
use writ_core::config::{PolicyConfig, PolicyMode};
use writ_policy::{Decision, Engine, LoadError, Situation, Verdict};

/// How often the policy folder is checked for changes.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// The policy set in force.
#[derive(Debug)]
pub struct Policies {
    dir: PathBuf,
    mode: PolicyMode,
    environment: String,
    /// The time a decision is made at.
    clock: Arc<dyn Clock>,
    current: RwLock<Arc<Engine>>,
    /// What the folder looked like when the current set (or the last failed attempt) was read.
    seen: Mutex<Fingerprint>,
}

/// The names, sizes and modification times of the folder's `*.cedar` files.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Fingerprint(Vec<(PathBuf, u64, Option<SystemTime>)>);

impl Fingerprint {
    fn of(dir: &Path) -> Option<Self> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "cedar"))
            .filter_map(|e| {
                // Through symlinks: a mounted folder (a Kubernetes ConfigMap) swaps the
                // links' targets, and the links themselves never change.
                let meta = std::fs::metadata(e.path()).ok()?;
                Some((e.path(), meta.len(), meta.modified().ok()))
            })
            .collect();
        files.sort();
        Some(Self(files))
    }
}

impl Policies {
    /// Loads the folder. A folder that does not exist or holds no policies is not an
    /// error — Writ starts and denies everything, and says so loudly — but a folder whose
    /// policies do not load is: there is no earlier set to keep.
    pub fn load(config: &PolicyConfig, clock: Arc<dyn Clock>) -> Result<Arc<Self>, LoadError> {
        let fingerprint = Fingerprint::of(&config.dir);
        let engine = match &fingerprint {
            None => Engine::empty(),
            Some(_) => Engine::load_dir(&config.dir)?,
        };
        let policies = Arc::new(Self {
            dir: config.dir.clone(),
            mode: config.mode,
            environment: config.environment.clone(),
            clock,
            current: RwLock::new(Arc::new(Engine::empty())),
            seen: Mutex::new(fingerprint.unwrap_or_default()),
        });
        policies.install(engine);
        if policies.mode == PolicyMode::Shadow {
            tracing::warn!(
                "policy mode is SHADOW (`policy.mode = \"shadow\"`): decisions are logged, not enforced"
            );
        }
        Ok(policies)
    }

    fn install(&self, engine: Engine) {
        if engine.is_empty() {
            tracing::error!(
                dir = %self.dir.display(),
                "NO POLICIES: the policy folder is missing or holds no `*.cedar` policies, so every task request, discovery and call is denied"
            );
        } else {
            tracing::info!(
                dir = %self.dir.display(),
                policies = engine.len(),
                files = engine.files(),
                hash = engine.hash(),
                "policy set loaded"
            );
        }
        for warning in engine.warnings() {
            tracing::warn!(%warning, "policy validation warning");
        }
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(engine);
        }
    }

    /// The set in force now. Hold on to it for the whole of one decision.
    pub fn current(&self) -> Arc<Engine> {
        self.current
            .read()
            .map_or_else(|_| Arc::new(Engine::empty()), |c| c.clone())
    }

    /// True when denies stop requests (not shadow mode).
    pub fn enforcing(&self) -> bool {
        self.mode == PolicyMode::Enforce
    }

    /// Where and when a decision is made.
    pub fn situation(&self) -> Situation {
        Situation {
            environment: self.environment.clone(),
            now: self.clock.now(),
        }
    }

    /// Re-reads the folder if it changed; true when a new set took effect.
    pub fn reload_if_changed(&self) -> bool {
        let now = Fingerprint::of(&self.dir).unwrap_or_default();
        {
            let Ok(mut seen) = self.seen.lock() else {
                return false;
            };
            if *seen == now {
                return false;
            }
            *seen = now.clone();
        }
        let engine = if now.0.is_empty() {
            Ok(Engine::empty())
        } else {
            Engine::load_dir(&self.dir)
        };
        match engine {
            Ok(engine) => {
                self.install(engine);
                true
            }
            Err(err) => {
                for problem in &err.problems {
                    tracing::error!(%problem, "policy reload refused; the previous set stays in force");
                }
                false
            }
        }
    }

    /// Watches the folder until `shutdown`; every set that takes effect is recorded in
    /// `audit`.
    pub fn spawn_watcher(
        self: &Arc<Self>,
        shutdown: CancellationToken,
        audit: Option<Arc<crate::audit::AuditLog>>,
    ) {
        let policies = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(WATCH_EVERY) => {}
                    () = shutdown.cancelled() => return,
                }
                let watched = policies.clone();
                // Reading and validating files blocks; keep it off the request threads.
                let reloaded = tokio::task::spawn_blocking(move || watched.reload_if_changed())
                    .await
                    .unwrap_or(false);
                if let (true, Some(audit)) = (reloaded, &audit) {
                    audit
                        .note(crate::events::policy_loaded(&policies.current(), "reload"))
                        .await;
                }
            }
        });
    }
}

/// A decision as one line of text: verdict, reasons, deciding policies.
pub fn describe(decision: &Decision) -> String {
    let mut text = match &decision.verdict {
        Verdict::Allow => "allowed".to_owned(),
        Verdict::Deny => "denied".to_owned(),
        Verdict::ApprovalRequired { groups } => {
            format!("approval required from {}", groups.join(" or "))
        }
    };
    if !decision.reasons.is_empty() {
        text.push_str(": ");
        text.push_str(&decision.reasons.join("; "));
    }
    if !decision.policies.is_empty() {
        text.push_str(&format!(" (policy {})", decision.policies.join(", ")));
    }
    text
}
