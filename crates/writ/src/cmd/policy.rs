//! `writ policy`: check a policy folder, run its test cases, and ask "what if".

#![expect(clippy::print_stdout, reason = "the command's output")]

use std::path::PathBuf;

use anyhow::{Context, bail};
use writ_core::task::TaskGrant;
use writ_core::tools::classify;
use writ_gateway::policy::describe;
use writ_gateway::token::{agent_facts, task_facts};
use writ_policy::{AgentFacts, Decision, Engine, Situation, ToolFacts, run_cases};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: super::ConfigArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Load every policy of the folder and check it against Writ's schema.
    Validate(DirArg),
    /// Run policy test cases (TOML) against the folder's policies.
    Test {
        /// Test case files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Decide one hypothetical discovery and call, and say why.
    Explain(ExplainArgs),
    /// Print Writ's Cedar schema.
    Schema,
}

#[derive(Debug, clap::Args)]
struct DirArg {
    /// The policy folder; `[policy] dir` of the configuration when not given.
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ExplainArgs {
    /// The agent, by name or id (looked up in the store for its team and owner).
    #[arg(long)]
    agent: String,
    /// The tool, as `server.tool`.
    #[arg(long)]
    tool: String,
    /// The call's arguments, as a JSON object.
    #[arg(long)]
    args: Option<String>,
    /// The task's purpose.
    #[arg(long, default_value = "explain a decision")]
    purpose: String,
    /// The task's category.
    #[arg(long)]
    category: Option<String>,
    /// The task's tool patterns (default: the tool itself).
    #[arg(long = "task-tool")]
    task_tools: Vec<String>,
    /// The task's data classes (default: the tool's own).
    #[arg(long = "data-class")]
    data_classes: Vec<String>,
    /// Decide as if a human had approved the call.
    #[arg(long)]
    approved: bool,
    /// The environment (default: `[policy] environment`).
    #[arg(long)]
    environment: Option<String>,
    /// The moment, as RFC 3339 (default: now).
    #[arg(long)]
    at: Option<String>,
    #[command(flatten)]
    dir: DirArg,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Schema => {
            print!("{}", writ_policy::schema::SCHEMA_TEXT);
            Ok(())
        }
        Command::Validate(dir) => {
            let dir = policy_dir(&args.config, dir)?;
            let engine = load(&dir)?;
            for warning in engine.warnings() {
                println!("warning: {warning}");
            }
            println!(
                "{} policies in {} files in `{}` are valid (set {})",
                engine.len(),
                engine.files(),
                dir.display(),
                engine.hash().get(..12).unwrap_or_default()
            );
            if engine.is_empty() {
                bail!("no policies: a gateway with this folder denies every request");
            }
            Ok(())
        }
        Command::Test { files, dir } => {
            let dir = policy_dir(&args.config, dir)?;
            let engine = load(&dir)?;
            let (mut passed, mut failed) = (0, 0);
            for file in files {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("could not read `{}`", file.display()))?;
                let outcomes = run_cases(&engine, &text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                for outcome in outcomes {
                    match &outcome.failure {
                        None => {
                            passed += 1;
                            println!("ok    {}", outcome.name);
                        }
                        Some(why) => {
                            failed += 1;
                            println!("FAIL  {}: {why}", outcome.name);
                        }
                    }
                }
            }
            println!("{passed} passed, {failed} failed");
            if failed > 0 {
                bail!("{failed} policy test case(s) failed");
            }
            Ok(())
        }
        Command::Explain(explain) => run_explain(&args.config, explain).await,
    }
}

fn policy_dir(config: &super::ConfigArg, dir: DirArg) -> anyhow::Result<PathBuf> {
    match dir.dir {
        Some(dir) => Ok(dir),
        None => Ok(config.load_or_default()?.policy.dir),
    }
}

fn load(dir: &std::path::Path) -> anyhow::Result<Engine> {
    if !dir.is_dir() {
        bail!("policy folder `{}` does not exist", dir.display());
    }
    Engine::load_dir(dir)
        .map_err(|e| anyhow::anyhow!("the policies in `{}` do not load:\n{e}", dir.display()))
}

async fn run_explain(config_arg: &super::ConfigArg, args: ExplainArgs) -> anyhow::Result<()> {
    let config = config_arg.load_or_default()?;
    let dir = args
        .dir
        .dir
        .clone()
        .unwrap_or_else(|| config.policy.dir.clone());
    let engine = load(&dir)?;
    let store = super::open_store(&config).await?;
    let agent: AgentFacts = match store.agent(&args.agent).await? {
        Some(agent) => agent_facts(&agent),
        None => bail!("no agent `{}` is registered", args.agent),
    };
    let (server_name, tool_name) = args
        .tool
        .split_once('.')
        .with_context(|| format!("`{}` is not `server.tool`", args.tool))?;
    let server = config
        .servers
        .iter()
        .find(|s| s.name.as_str() == server_name)
        .with_context(|| format!("no server `{server_name}` in the configuration"))?;
    // Annotations count only for trusted servers; the pinned definition has them.
    let pinned = store.tool_pin(server_name, tool_name).await?;
    let annotations = pinned
        .as_ref()
        .and_then(|p| p.definition.get("annotations"));
    let tool = ToolFacts {
        name: args.tool.clone(),
        server: server_name.to_owned(),
        trusted: server.trusted,
        class: classify(&server.tools, server.trusted, tool_name, annotations),
    };
    let mut details = serde_json::json!({
        "type": "mcp_task",
        "purpose": args.purpose,
        "tools": if args.task_tools.is_empty() { vec![args.tool.clone()] } else { args.task_tools.clone() },
        "data_classes": if args.data_classes.is_empty() { tool.class.data_classes.clone() } else { args.data_classes.clone() },
    });
    if let (Some(category), Some(details)) = (&args.category, details.as_object_mut()) {
        details.insert("category".into(), category.clone().into());
    }
    let grant = TaskGrant::from_authorization_details(&serde_json::json!([details]).to_string())
        .map_err(|e| anyhow::anyhow!("the task: {e}"))?;
    let task = task_facts("", &grant, 0, 0);
    let now = match &args.at {
        None => writ_gateway::token::now(),
        Some(at) => humantime::parse_rfc3339(at)
            .with_context(|| format!("`--at {at}` is not an RFC 3339 time"))?
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
    };
    let situation = Situation {
        environment: args
            .environment
            .clone()
            .unwrap_or(config.policy.environment.clone()),
        now,
    };
    let arguments = args
        .args
        .as_deref()
        .map(serde_json::from_str::<serde_json::Value>)
        .transpose()
        .context("`--args` must be JSON")?;
    let discover = engine.discover(&agent, &tool, &task, &situation);
    let call = engine.call(
        &agent,
        &tool,
        &task,
        arguments.as_ref(),
        args.approved,
        &situation,
    );
    if args.json {
        let decision = |d: &Decision| {
            serde_json::json!({
                "decision": d.verdict.as_str(),
                "policies": d.policies,
                "reasons": d.reasons,
                "evaluated": d.evaluated,
            })
        };
        println!(
            "{}",
            serde_json::json!({
                "agent": { "name": agent.name, "team": agent.team, "owner": agent.owner },
                "tool": {
                    "name": tool.name,
                    "access": tool.class.access.as_str(),
                    "risk": tool.class.risk.as_str(),
                    "data_classes": tool.class.data_classes,
                    "groups": tool.class.groups,
                },
                "environment": situation.environment,
                "discover": decision(&discover),
                "call": decision(&call),
            })
        );
        return Ok(());
    }
    println!(
        "agent   {} (team {}, owner {})",
        agent.name,
        agent.team.as_deref().unwrap_or("-"),
        agent.owner.as_deref().unwrap_or("-")
    );
    println!(
        "tool    {}: {} / {}, data classes [{}], groups [{}]{}",
        tool.name,
        tool.class.access,
        tool.class.risk,
        tool.class.data_classes.join(", "),
        tool.class.groups.join(", "),
        if server.trusted {
            ", server trusted"
        } else {
            ""
        }
    );
    println!(
        "where   environment {}, unix time {}",
        situation.environment, situation.now
    );
    println!(
        "discover  {} ({} of {} policies evaluated)",
        describe(&discover),
        discover.evaluated,
        engine.len()
    );
    println!(
        "call      {} ({} of {} policies evaluated)",
        describe(&call),
        call.evaluated,
        engine.len()
    );
    Ok(())
}
