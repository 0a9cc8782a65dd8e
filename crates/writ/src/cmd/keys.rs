//! `writ keys`: Writ's own signing keys for the writs it issues.

#![expect(clippy::print_stdout, reason = "the command's output")]

use writ_gateway::token::{keys, now};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: super::ConfigArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Make a new signing key; the old ones keep verifying until their writs expire.
    Rotate,
    /// List the signing keys (ids and dates, never key material).
    List,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let store = super::open_store(&config).await?;
    match args.command {
        Command::Rotate => {
            let key = keys::rotate(store.as_ref(), config.tokens.algorithm, now()).await?;
            println!("{}", key.kid);
            eprintln!(
                "new {} signing key; retired keys verify for {} more",
                key.algorithm,
                humantime::format_duration(config.tokens.max_ttl)
            );
        }
        Command::List => {
            println!(
                "{:<44}  {:<6}  {:<10}  RETIRED AT",
                "KID", "ALG", "CREATED AT"
            );
            for key in store.signing_keys().await? {
                println!(
                    "{:<44}  {:<6}  {:<10}  {}",
                    key.kid,
                    key.algorithm,
                    key.created_at,
                    key.retired_at.map_or("-".to_owned(), |t| t.to_string())
                );
            }
        }
    }
    Ok(())
}
