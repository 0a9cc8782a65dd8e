//! `writ serve --config writ.toml`.

use writ_core::config::AuthMode;
use writ_gateway::Running;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: super::ConfigArg,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let running = match config.gateway.auth {
        AuthMode::On => {
            Running::start_with_store(&config, super::open_store(&config).await?).await?
        }
        // Without authentication the gateway keeps no state: no store is opened.
        AuthMode::Off => Running::start(&config).await?,
    };
    // Listening for SIGTERM before saying so: a script that stops the gateway as soon as
    // it reads the line below must find it ready to drain.
    let signal = super::shutdown_signal();
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
        signal.await;
        tracing::info!("shutting down: draining in-flight calls");
        token.cancel();
    });
    running.run_until_shutdown(super::DRAIN).await;
    Ok(())
}
