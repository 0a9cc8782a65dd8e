pub mod agent;
pub mod audit;
pub mod bench;
pub mod demo;
pub mod keys;
pub mod policy;
pub mod serve;
pub mod task;
pub mod tools;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use writ_agent::key::{self as agent_key, AgentKey};
use writ_core::config::{Config, SigningAlgorithm};
use writ_gateway::token::now;
use writ_store::{Agent, AgentCredential, SqliteStore, Store};

/// The `--config` option every command that reads `writ.toml` shares.
#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// The configuration file.
    #[arg(
        long,
        short,
        global = true,
        default_value = "writ.toml",
        env = "WRIT_CONFIG"
    )]
    pub config: PathBuf,
}

impl ConfigArg {
    /// Reads and parses the file; the store path and policy folder become relative to the
    /// file's folder.
    pub fn load(&self) -> anyhow::Result<Config> {
        load_config(&self.config)
    }

    /// The configuration when the file exists, defaults otherwise (for client commands).
    pub fn load_or_default(&self) -> anyhow::Result<Config> {
        if self.config.exists() {
            self.load()
        } else {
            Config::parse("").map_err(|err| anyhow::anyhow!("{err}"))
        }
    }
}

pub fn load_config(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read `{}`", path.display()))?;
    let mut config =
        Config::parse(&text).map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    if config.store.path.is_relative() {
        config.store.path = base.join(&config.store.path);
    }
    if config.policy.dir.is_relative() {
        config.policy.dir = base.join(&config.policy.dir);
    }
    Ok(config)
}

/// Opens the store the configuration names. This is where the binary picks the store's
/// backend, for `writ serve` and every other command: SQLite, the only one Writ has today.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let store = SqliteStore::open(&config.store.path)
        .await
        .with_context(|| {
            format!(
                "could not open the store at `{}`",
                config.store.path.display()
            )
        })?;
    Ok(Arc::new(store))
}

/// Registers an agent that proves itself with a fresh key pair of `algorithm` and returns
/// its private key. With `key_file`, the key is written there first (never over an
/// existing file), and removed again if the registration is refused.
pub async fn register_key_agent(
    store: &dyn Store,
    name: &str,
    team: Option<String>,
    owner: Option<String>,
    algorithm: SigningAlgorithm,
    key_file: Option<&Path>,
) -> anyhow::Result<AgentKey> {
    let id = agent_key::new_agent_id();
    let (key, public_pem) = AgentKey::generate(&id, algorithm)?;
    if let Some(path) = key_file {
        key.write(path)?;
    }
    let registered = store
        .create_agent(&Agent {
            id,
            name: name.to_owned(),
            team,
            owner,
            credential: AgentCredential::PublicKey {
                algorithm: algorithm.as_str().to_owned(),
                pem: public_pem,
            },
            disabled: false,
            created_at: now(),
        })
        .await;
    if let Err(err) = registered {
        if let Some(path) = key_file {
            let _ = std::fs::remove_file(path);
        }
        return Err(err.into());
    }
    Ok(key)
}

/// Writ's base URL as agents reach it: `public_url`, else the listen address.
pub fn base_url(config: &Config) -> String {
    config
        .gateway
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.gateway.listen))
}

/// How long in-flight calls get to finish after a shutdown signal.
pub const DRAIN: Duration = Duration::from_secs(30);

/// Resolves on Ctrl-C or SIGTERM.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    // The handlers are registered now, not at the first poll: a SIGTERM that arrives
    // right after `writ serve` says it is listening must already be caught.
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt()).ok();
        let terminate = signal(SignalKind::terminate()).ok();
        async move {
            async fn wait(signal: Option<Signal>) {
                match signal {
                    Some(mut signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = wait(interrupt) => {}
                () = wait(terminate) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
