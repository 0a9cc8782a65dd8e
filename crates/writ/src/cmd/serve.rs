//! `writ serve --config writ.toml`.

use std::path::PathBuf;

use anyhow::Context;
use writ_core::config::Config;
use writ_gateway::Running;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The configuration file.
    #[arg(long, short, default_value = "writ.toml", env = "WRIT_CONFIG")]
    config: PathBuf,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("could not read `{}`", args.config.display()))?;
    let config =
        Config::parse(&text).map_err(|err| anyhow::anyhow!("{}: {err}", args.config.display()))?;
    let running = Running::start(&config).await?;
    tracing::info!(url = %running.mcp_url(), servers = config.servers.len(), "writ is listening");
    // One line on stdout that scripts can wait for.
    #[expect(
        clippy::print_stdout,
        reason = "the listening line is the command's output"
    )]
    {
        println!("writ listening on {}", running.mcp_url());
    }
    let token = running.shutdown_token();
    tokio::spawn(async move {
        super::shutdown_signal().await;
        tracing::info!("shutting down: draining in-flight calls");
        token.cancel();
    });
    running.run_until_shutdown(super::DRAIN).await;
    Ok(())
}
