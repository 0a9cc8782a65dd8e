//! `writ agent`: the registry of agents, each with one identity of its own.

#![expect(clippy::print_stdout, reason = "the command's output")]

use std::path::PathBuf;

use anyhow::{Context, bail};
use writ_agent::key as agent_key;
use writ_core::config::SigningAlgorithm;
use writ_gateway::token::{SPIFFE_ISSUER, now, spiffe_trust_domain};
use writ_store::{Agent, AgentCredential};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: super::ConfigArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Register a new agent with a fresh key pair; the private key goes to `--out`.
    Create {
        name: String,
        #[arg(long)]
        team: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        /// Where to write the agent's key file (created with mode 0600; never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// `EdDSA` (Ed25519) or `ES256` (P-256).
        #[arg(long, default_value = "EdDSA", value_parser = parse_algorithm)]
        algorithm: SigningAlgorithm,
    },
    /// Register an agent whose key or identity lives elsewhere.
    Add {
        name: String,
        #[arg(long)]
        team: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        /// A public key (PEM) the agent signs its assertions with.
        #[arg(long, group = "identity")]
        public_key: Option<PathBuf>,
        /// A JWKS URL publishing the agent's keys.
        #[arg(long, group = "identity")]
        jwks_url: Option<String>,
        /// The agent's SPIFFE ID (`spiffe://trust-domain/path`).
        #[arg(long, group = "identity")]
        spiffe_id: Option<String>,
        /// The agent's subject at an OIDC issuer (the value of that issuer's `agent_claim`).
        #[arg(long, group = "identity", requires = "oidc_issuer")]
        oidc_subject: Option<String>,
        /// The OIDC issuer of `--oidc-subject`, as configured in `[[identity.oidc]]`.
        #[arg(long)]
        oidc_issuer: Option<String>,
    },
    /// List registered agents.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one agent.
    Show { agent: String },
    /// Disable an agent and revoke every task it holds or delegated.
    Disable { agent: String },
}

fn parse_algorithm(text: &str) -> Result<SigningAlgorithm, String> {
    match text {
        "EdDSA" | "ed25519" => Ok(SigningAlgorithm::EdDSA),
        "ES256" | "p256" => Ok(SigningAlgorithm::ES256),
        other => Err(format!("`{other}` is not `EdDSA` or `ES256`")),
    }
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !ok || name.starts_with("agt_") {
        bail!(
            "agent name `{name}` must be 1 to 64 characters of A-Z, a-z, 0-9, `_`, `-` or `.`, not starting with `agt_`"
        );
    }
    Ok(())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let store = super::open_store(&config).await?;
    match args.command {
        Command::Create {
            name,
            team,
            owner,
            out,
            algorithm,
        } => {
            check_name(&name)?;
            if store.agent(&name).await?.is_some() {
                bail!("an agent named `{name}` already exists");
            }
            let key = super::register_key_agent(
                store.as_ref(),
                &name,
                team,
                owner,
                algorithm,
                Some(&out),
            )
            .await?;
            eprintln!(
                "agent `{name}` registered; its private key is in `{}` (keep it secret)",
                out.display()
            );
            println!("{}", key.agent_id);
        }
        Command::Add {
            name,
            team,
            owner,
            public_key,
            jwks_url,
            spiffe_id,
            oidc_subject,
            oidc_issuer,
        } => {
            check_name(&name)?;
            let credential = if let Some(path) = public_key {
                let pem = std::fs::read_to_string(&path)
                    .with_context(|| format!("could not read `{}`", path.display()))?;
                let algorithm = agent_key::public_key_algorithm(&pem)?;
                AgentCredential::PublicKey {
                    algorithm: algorithm.as_str().to_owned(),
                    pem,
                }
            } else if let Some(url) = jwks_url {
                if !url.starts_with("https://") && !is_loopback_http(&url) {
                    bail!("`--jwks-url` must be https:// (plain http only on this machine)");
                }
                AgentCredential::JwksUrl { url }
            } else if let Some(id) = spiffe_id {
                let domain = spiffe_trust_domain(&id)
                    .with_context(|| format!("`{id}` is not a SPIFFE ID"))?;
                if !config
                    .identity
                    .spiffe
                    .iter()
                    .any(|s| s.trust_domain == domain)
                {
                    eprintln!(
                        "warning: trust domain `{domain}` is not configured in `[[identity.spiffe]]`"
                    );
                }
                AgentCredential::External {
                    issuer: SPIFFE_ISSUER.to_owned(),
                    subject: id,
                }
            } else if let (Some(subject), Some(issuer)) = (oidc_subject, oidc_issuer) {
                if !config.identity.oidc.iter().any(|o| o.issuer == issuer) {
                    eprintln!(
                        "warning: issuer `{issuer}` is not configured in `[[identity.oidc]]`"
                    );
                }
                AgentCredential::External { issuer, subject }
            } else {
                bail!(
                    "say how the agent proves itself: `--public-key`, `--jwks-url`, `--spiffe-id` or `--oidc-subject` with `--oidc-issuer`"
                );
            };
            let id = agent_key::new_agent_id();
            store
                .create_agent(&Agent {
                    id: id.clone(),
                    name,
                    team,
                    owner,
                    credential,
                    disabled: false,
                    created_at: now(),
                })
                .await?;
            println!("{id}");
        }
        Command::List { json } => {
            let agents = store.agents().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&agents)?);
            } else {
                println!(
                    "{:<36}  {:<20}  {:<12}  {:<10}  PROVES WITH",
                    "ID", "NAME", "TEAM", "STATE"
                );
                for agent in agents {
                    println!(
                        "{:<36}  {:<20}  {:<12}  {:<10}  {}",
                        agent.id,
                        agent.name,
                        agent.team.as_deref().unwrap_or("-"),
                        if agent.disabled { "disabled" } else { "active" },
                        describe(&agent.credential)
                    );
                }
            }
        }
        Command::Show { agent } => {
            let agent = store
                .agent(&agent)
                .await?
                .with_context(|| format!("no agent `{agent}`"))?;
            println!("{}", serde_json::to_string_pretty(&agent)?);
        }
        Command::Disable { agent } => {
            let found = store
                .agent(&agent)
                .await?
                .with_context(|| format!("no agent `{agent}`"))?;
            let revoked = store.disable_agent(&found.id, now()).await?;
            println!(
                "agent `{}` disabled; {} task(s) revoked",
                found.name,
                revoked.len()
            );
        }
    }
    Ok(())
}

fn describe(credential: &AgentCredential) -> String {
    match credential {
        AgentCredential::PublicKey { algorithm, .. } => format!("{algorithm} key"),
        AgentCredential::JwksUrl { url } => format!("keys at {url}"),
        AgentCredential::External { issuer, subject } if issuer == SPIFFE_ISSUER => subject.clone(),
        AgentCredential::External { issuer, subject } => format!("{subject} at {issuer}"),
    }
}

fn is_loopback_http(url: &str) -> bool {
    url.strip_prefix("http://")
        .and_then(|rest| rest.split(['/', ':']).next())
        .is_some_and(|host| host == "localhost" || host == "127.0.0.1" || host == "[::1]")
}
