//! `writ tools`: the tool definitions Writ has pinned, and accepting changed ones.

#![expect(clippy::print_stdout, reason = "the command's output")]

use anyhow::{Context, bail};
use writ_store::ToolPin;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: super::ConfigArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// List pinned tools; changed ones are held back until accepted.
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a tool's pinned definition and, if it changed, the new one.
    Show {
        /// The tool, as `server.tool`.
        tool: String,
    },
    /// Trust a tool's changed definition: it is shown and callable again.
    Accept {
        /// The tool, as `server.tool`.
        tool: String,
        /// The changed definition's hash (or its first characters) as `writ tools show`
        /// printed it: if the server changed the tool again since, nothing is accepted.
        #[arg(long)]
        hash: Option<String>,
    },
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let store = super::open_store(&config).await?;
    match args.command {
        Command::List { json } => {
            let pins = store.tool_pins(None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&pins)?);
                return Ok(());
            }
            println!("{:<40}  {:<8}  {:<12}  PINNED AT", "TOOL", "STATE", "HASH");
            for pin in pins {
                println!(
                    "{:<40}  {:<8}  {:<12}  {}",
                    format!("{}.{}", pin.server, pin.tool),
                    if pin.drift.is_some() {
                        "CHANGED"
                    } else {
                        "pinned"
                    },
                    pin.hash.get(..12).unwrap_or_default(),
                    pin.pinned_at
                );
            }
        }
        Command::Show { tool } => {
            let pin = find(store.as_ref(), &tool).await?;
            println!("pinned definition (hash {}):", pin.hash);
            println!("{}", serde_json::to_string_pretty(&pin.definition)?);
            match &pin.drift {
                None => println!("\nno change since it was pinned"),
                Some(drift) => {
                    println!(
                        "\nCHANGED definition seen at {} (hash {}), held back:",
                        drift.seen_at, drift.hash
                    );
                    println!("{}", serde_json::to_string_pretty(&drift.definition)?);
                    println!(
                        "\naccept it with: writ tools accept {tool} --hash {}",
                        drift.hash.get(..12).unwrap_or(&drift.hash)
                    );
                }
            }
        }
        Command::Accept { tool, hash } => {
            let before = find(store.as_ref(), &tool).await?;
            let Some(drift) = &before.drift else {
                bail!("tool `{tool}` has not changed since it was pinned: nothing to accept");
            };
            let (server, name) = split(&tool)?;
            let after = store
                .accept_tool(server, name, hash.as_deref(), writ_gateway::token::now())
                .await?;
            tracing::info!(tool, from = %before.hash, to = %after.hash, "tool definition accepted");
            println!(
                "accepted `{tool}`: pinned hash {} → {} (running gateways release it within a second)",
                before.hash.get(..12).unwrap_or_default(),
                drift.hash.get(..12).unwrap_or_default()
            );
        }
    }
    Ok(())
}

fn split(tool: &str) -> anyhow::Result<(&str, &str)> {
    tool.split_once('.')
        .with_context(|| format!("`{tool}` is not `server.tool`"))
}

async fn find(store: &dyn writ_store::Store, tool: &str) -> anyhow::Result<ToolPin> {
    let (server, name) = split(tool)?;
    store.tool_pin(server, name).await?.with_context(|| {
        format!("no tool `{tool}` has been pinned (Writ pins tools when it first lists them)")
    })
}
