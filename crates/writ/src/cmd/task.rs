//! `writ task`: begin and end tasks as an agent (over HTTP, at the token endpoint); list,
//! show and revoke them as an operator (in the store).

#![expect(clippy::print_stdout, reason = "the command's output")]

use std::path::PathBuf;

use anyhow::{Context, bail};
use writ_agent::AgentKey;
use writ_agent::client::{self, TaskRequest};
use writ_store::{TaskFilter, TaskState};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: super::ConfigArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Begin a task as an agent and print its writ.
    Begin {
        /// The agent's key file (from `writ agent create`).
        #[arg(long)]
        key: PathBuf,
        /// What the task is for.
        #[arg(long)]
        purpose: String,
        /// A tool the task needs: `server.tool` or `server.*` (repeat for several).
        #[arg(long = "tool", required = true)]
        tools: Vec<String>,
        /// A data class the task touches (repeat for several).
        #[arg(long = "data-class")]
        data_classes: Vec<String>,
        #[arg(long)]
        max_calls: Option<u64>,
        /// How long the writ should live, like "10m"; Writ clips it to `tokens.max_ttl`.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
        /// Bind the writ to the agent's key (DPoP).
        #[arg(long)]
        dpop: bool,
        /// Writ's base URL; from the config file when not given.
        #[arg(long)]
        url: Option<String>,
        /// Print the whole token response as JSON.
        #[arg(long)]
        json: bool,
    },
    /// End the task of a writ (its holder's revocation).
    End {
        /// The writ; read from `WRIT_TOKEN` when not given.
        #[arg(long, env = "WRIT_TOKEN", hide_env_values = true)]
        token: String,
        #[arg(long)]
        url: Option<String>,
    },
    /// List tasks (operator).
    List {
        #[arg(long)]
        agent: Option<String>,
        /// active, completed, revoked or expired.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Show one task (operator).
    Show { task: String },
    /// Revoke a task and its delegated descendants (operator).
    Revoke {
        task: String,
        #[arg(long, default_value = "revoked by an operator")]
        reason: String,
    },
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Begin {
            key,
            purpose,
            tools,
            data_classes,
            max_calls,
            ttl,
            dpop,
            url,
            json,
        } => {
            let config = args.config.load_or_default()?;
            let base = url.unwrap_or_else(|| super::base_url(&config));
            let key = AgentKey::read(&key)?;
            let request = TaskRequest {
                purpose,
                tools,
                data_classes,
                max_calls,
                ttl: ttl.map(|t| t.as_secs()),
                dpop,
            };
            let begun = client::begin_task(&reqwest::Client::new(), &base, &key, &request)
                .await
                .map_err(|e| anyhow::anyhow!("the task was refused: {e}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&begun.body)?);
            } else {
                eprintln!(
                    "task {} begun ({} writ, {} s)",
                    begun.task, begun.token_type, begun.expires_in
                );
                println!("{}", begun.access_token);
            }
        }
        Command::End { token, url } => {
            let config = args.config.load_or_default()?;
            let base = url.unwrap_or_else(|| super::base_url(&config));
            client::end_task(&reqwest::Client::new(), &base, token.trim())
                .await
                .map_err(|e| anyhow::anyhow!("could not end the task: {e}"))?;
            eprintln!("task ended");
        }
        Command::List {
            agent,
            state,
            limit,
            json,
        } => {
            let config = args.config.load()?;
            let store = super::open_store(&config).await?;
            let agent_id = match agent {
                None => None,
                Some(name) => Some(
                    store
                        .agent(&name)
                        .await?
                        .with_context(|| format!("no agent `{name}`"))?
                        .id,
                ),
            };
            let state = match state.as_deref() {
                None => None,
                Some(text) => Some(TaskState::parse(text).with_context(|| {
                    format!("`{text}` is not a task state (active, completed, revoked, expired)")
                })?),
            };
            let tasks = store
                .tasks(&TaskFilter {
                    agent_id,
                    state,
                    limit: Some(limit),
                })
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tasks)?);
            } else {
                println!(
                    "{:<36}  {:<36}  {:<9}  {:>5}  PURPOSE",
                    "TASK", "AGENT", "STATE", "CALLS"
                );
                for task in tasks {
                    println!(
                        "{:<36}  {:<36}  {:<9}  {:>5}  {}",
                        task.id,
                        task.agent_id,
                        task.state.as_str(),
                        task.calls,
                        task.purpose
                    );
                }
            }
        }
        Command::Show { task } => {
            let config = args.config.load()?;
            let store = super::open_store(&config).await?;
            let task = store
                .task(&task)
                .await?
                .with_context(|| format!("no task `{task}`"))?;
            println!("{}", serde_json::to_string_pretty(&task)?);
        }
        Command::Revoke { task, reason } => {
            let config = args.config.load()?;
            let store = super::open_store(&config).await?;
            let changed = store
                .end_task(
                    &task,
                    TaskState::Revoked,
                    &reason,
                    writ_gateway::token::now(),
                )
                .await?;
            if changed.is_empty() {
                bail!("task `{task}` is not active");
            }
            println!("revoked {} task(s): {}", changed.len(), changed.join(", "));
            eprintln!("a running gateway sees this within a second");
        }
    }
    Ok(())
}
