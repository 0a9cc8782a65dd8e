//! `writ`: the binary wires the libraries together; each subcommand is one module.

mod cmd;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: a request allocates and frees many small
/// strings and JSON values across threads, and with glibc's allocator that was 8–20% of
/// the gateway's CPU in profiles, and its per-thread arenas held on to memory a burst
/// of large tool lists had used (BENCHMARKS.md, "Allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Writ: an identity-aware gateway for the Model Context Protocol.
#[derive(Debug, Parser)]
#[command(name = "writ", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway from a configuration file.
    Serve(cmd::serve::Args),
    /// Run the gateway in front of built-in demo servers and show it working.
    Demo(cmd::demo::Args),
    /// Measure calls, lists and token exchanges through Writ against a direct connection.
    Bench(cmd::bench::Args),
    /// Register agents and manage their identities.
    Agent(cmd::agent::Args),
    /// Begin and end tasks (as an agent); list, show and revoke them (as an operator).
    Task(cmd::task::Args),
    /// Rotate and list Writ's signing keys.
    Keys(cmd::keys::Args),
    /// Validate, test and explain Cedar policies.
    Policy(cmd::policy::Args),
    /// List pinned tool definitions and accept changed ones.
    Tools(cmd::tools::Args),
    /// Verify, query, explain, export, tail and prune the hash-chained audit log.
    Audit(cmd::audit::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WRIT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: could not start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => cmd::serve::run(args).await,
            Command::Demo(args) => cmd::demo::run(args).await,
            Command::Bench(args) => cmd::bench::run(args).await,
            Command::Agent(args) => cmd::agent::run(args).await,
            Command::Task(args) => cmd::task::run(args).await,
            Command::Keys(args) => cmd::keys::run(args).await,
            Command::Policy(args) => cmd::policy::run(args).await,
            Command::Tools(args) => cmd::tools::run(args).await,
            Command::Audit(args) => cmd::audit::run(args).await,
        }
    });
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
