//! What a decision costs against policy sets shaped like a real deployment's.
//!
//! The sets are generated, deterministically, from a small universe of teams, servers,
//! tools and tool groups: a few open-scope policies every tool request meets (read-only
//! by default, export hours, approval for critical tools, call budgets), then per-tool
//! team permits (some reading the call's arguments), per-server forbids on risk, hours
//! and environment, and tool-group permits and approval forbids. Conditions read real
//! facts and mostly do not fire, so Cedar evaluates them in full.
//!
//! - `call_decision/{10,100,1000}`: one `Engine::call` with a five-leaf argument object,
//!   for a tool that some policies target (issue target: ≤ 20 µs at 1,000 policies).
//! - `list_filter/500_tools_200_policies`: a `tools/list` filter, `discover` for each of
//!   500 tools (target: ≤ 5 ms). Slices are cached per (action, tool) inside the engine,
//!   so this is the steady state a running gateway sees.
//! - `list_filter_cold/500_tools_200_policies`: the same against a freshly loaded engine
//!   each iteration (loading excluded), so the first list after a (re)load, which builds
//!   every slice, is visible.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmarks fail loudly on setup errors"
)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use writ_core::tools::{Access, Risk, ToolClass};
use writ_policy::{AgentFacts, Engine, Situation, Source, TaskFacts, ToolFacts, Verdict};

const BOTH: &str = r#"action in [Writ::Action::"discover", Writ::Action::"call"]"#;
const CALL: &str = r#"action == Writ::Action::"call""#;

/// A small deterministic generator (SplitMix64), so every run benches the same set.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }

    /// True `percent` times in a hundred.
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// The deployment a policy set is written for.
struct Universe {
    servers: usize,
    tools_per_server: usize,
    teams: usize,
    groups: usize,
}

impl Universe {
    /// Grows with the set: about two tool-scoped policies per tool (fewer at 10).
    fn for_policies(n: usize) -> Self {
        Self {
            servers: (n / 25).clamp(2, 40),
            tools_per_server: 10,
            teams: (n / 25).clamp(2, 40),
            groups: (n / 50).clamp(1, 20),
        }
    }

    fn tool_count(&self) -> usize {
        self.servers * self.tools_per_server
    }

    fn tool_name(&self, index: usize) -> String {
        format!(
            "s{}.t{}",
            index / self.tools_per_server,
            index % self.tools_per_server
        )
    }

    /// Every tool, with classes spread as a scanner would find them. Tool 0 is the
    /// benchmarks' target: a medium-risk write tool in group `g0`.
    fn tools(&self, rng: &mut Rng) -> Vec<ToolFacts> {
        (0..self.tool_count())
            .map(|index| {
                let name = self.tool_name(index);
                if index == 0 {
                    return tool(&name, Access::Write, Risk::Medium, &["pii"], &["g0"]);
                }
                let access = match rng.below(100) {
                    0..50 => Access::Read,
                    50..85 => Access::Write,
                    _ => Access::Execute,
                };
                let risk = match rng.below(100) {
                    0..40 => Risk::Low,
                    40..75 => Risk::Medium,
                    75..95 => Risk::High,
                    _ => Risk::Critical,
                };
                let mut data = Vec::new();
                if rng.chance(10) {
                    data.push("export");
                }
                if rng.chance(20) {
                    data.push("pii");
                }
                let mut groups = Vec::new();
                if rng.chance(40) {
                    groups.push(format!("g{}", rng.below(self.groups)));
                    if rng.chance(25) {
                        groups.push(format!("g{}", rng.below(self.groups)));
                        groups.dedup();
                    }
                }
                let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
                tool(&name, access, risk, &data, &groups)
            })
            .collect()
    }

    /// `n` policies: 4 open-scope, then about 75% per-tool, 15% per-server and 10%
    /// per-group. The first per-tool policy lets team `t0` use tool 0, and the first
    /// per-server and per-group policies cover its server and group, so the target
    /// tool's slice holds each kind.
    fn policies(&self, n: usize, rng: &mut Rng) -> Vec<Source> {
        let mut open = String::new();
        let mut tools = String::new();
        let mut servers = String::new();
        let mut groups = String::new();
        let mut count = 0;
        for policy in OPEN.iter().take(n) {
            open.push_str(policy);
            count += 1;
        }
        let rest = n - count;
        // At least one of each, so even the smallest set has every kind.
        let by_server = (rest * 15 / 100).max(1).min(rest);
        let by_group = (rest / 10).max(1).min(rest - by_server);
        let by_tool = rest - by_server - by_group;
        for k in 0..by_tool {
            let target = if k == 0 {
                0
            } else {
                rng.below(self.tool_count())
            };
            let team = if k == 0 { 0 } else { rng.below(self.teams) };
            self.tool_policy(&mut tools, k, target, team, rng);
        }
        for k in 0..by_server {
            let server = if k == 0 { 0 } else { rng.below(self.servers) };
            server_policy(&mut servers, k, server, rng.below(self.teams), rng);
        }
        for k in 0..by_group {
            let group = if k == 0 { 0 } else { rng.below(self.groups) };
            group_policy(&mut groups, k, group, rng.below(self.teams), rng);
        }
        [
            ("00-open.cedar", open),
            ("10-tools.cedar", tools),
            ("20-servers.cedar", servers),
            ("30-groups.cedar", groups),
        ]
        .into_iter()
        .filter(|(_, text)| !text.is_empty())
        .map(|(name, text)| Source {
            name: name.into(),
            text,
        })
        .collect()
    }

    fn tool_policy(&self, out: &mut String, k: usize, target: usize, team: usize, rng: &mut Rng) {
        let tool = self.tool_name(target);
        let head = |effect: &str, principal: &str, action: &str| {
            format!(
                "@id(\"tool-{k}\")\n{effect} (\n  {principal},\n  {action},\n  \
                 resource == Writ::Tool::\"{tool}\"\n)\n"
            )
        };
        let team = format!("principal in Writ::Team::\"t{team}\"");
        let policy = match if k == 0 { 0 } else { rng.below(100) } {
            // A team may see and use the tool, in prod only on working days.
            0..60 => {
                head("permit", &team, BOTH)
                    + "when { context.environment != \"prod\" || context.time.weekday <= 5 };\n"
            }
            // A team may call it on its own paths, with arguments small enough to check.
            60..85 => {
                head("permit", &team, CALL)
                    + "when {\n  !context.arguments_omitted &&\n  \
                       context.arguments.hasTag(\"path\") &&\n  \
                       context.arguments.getTag(\"path\") like \"/srv/*\"\n};\n"
            }
            // Nobody pulls too much at once.
            _ => {
                head("forbid", "principal", CALL)
                    + "when {\n  context.argument_numbers.hasTag(\"limit\") &&\n  \
                       context.argument_numbers.getTag(\"limit\") > 10000\n};\n"
            }
        };
        out.push_str(&policy);
        out.push('\n');
    }
}

/// Every tool request meets these.
const OPEN: [&str; 4] = [
    r#"@id("read-tools-for-everyone")
@reason("tools that only read are open to every registered agent")
permit (principal, action in [Writ::Action::"discover", Writ::Action::"call"], resource)
when { resource.access == "read" };

"#,
    r#"@id("no-export-after-hours-in-prod")
@reason("in prod, `export` data leaves only Monday to Friday, 08:00 to 18:00 UTC")
forbid (principal, action == Writ::Action::"call", resource)
when {
  resource.data_classes.contains("export") &&
  context.environment == "prod" &&
  (context.time.weekday > 5 || context.time.hour < 8 || context.time.hour >= 18)
};

"#,
    r#"@id("critical-needs-approval")
@approval("security")
@reason("critical tools need the security team's approval")
forbid (principal, action == Writ::Action::"call", resource)
when { resource.risk == "critical" }
unless { context.approved };

"#,
    r#"@id("task-budget")
@reason("a task with a call budget stops at it")
forbid (principal, action in [Writ::Action::"discover", Writ::Action::"call"], resource)
when { context.task.max_calls > 0 && context.task.calls >= context.task.max_calls };

"#,
];

fn server_policy(out: &mut String, k: usize, server: usize, team: usize, rng: &mut Rng) {
    let head = |action: &str| {
        format!(
            "@id(\"server-{k}\")\nforbid (\n  principal,\n  {action},\n  \
             resource in Writ::Server::\"s{server}\"\n)\n"
        )
    };
    let policy = match rng.below(3) {
        // Risky tools only in working hours in prod.
        0 => {
            head(CALL)
                + "when {\n  resource.risk_level >= 3 &&\n  context.environment == \"prod\" &&\n  \
                   (context.time.hour < 7 || context.time.hour >= 19)\n};\n"
        }
        // Critical tools of this server belong to one team in prod.
        1 => {
            head(BOTH)
                + &format!(
                    "when {{\n  context.environment == \"prod\" &&\n  resource.risk_level == 4 &&\n  \
                     !(principal in Writ::Team::\"t{team}\")\n}};\n"
                )
        }
        // No executing from deep delegations.
        _ => head(CALL) + "when { resource.access == \"execute\" && context.task.depth > 2 };\n",
    };
    out.push_str(&policy);
    out.push('\n');
}

fn group_policy(out: &mut String, k: usize, group: usize, team: usize, rng: &mut Rng) {
    let resource = format!("resource in Writ::ToolGroup::\"g{group}\"");
    let policy = if rng.chance(50) {
        format!(
            "@id(\"group-{k}\")\npermit (\n  principal in Writ::Team::\"t{team}\",\n  {BOTH},\n  \
             {resource}\n)\nwhen {{ resource.risk_level <= 2 }};\n"
        )
    } else {
        format!(
            "@id(\"group-{k}\")\n@approval(\"security\")\nforbid (\n  principal,\n  {CALL},\n  \
             {resource}\n)\nwhen {{ context.environment == \"prod\" && resource.risk_level >= 3 }}\n\
             unless {{ context.approved }};\n"
        )
    };
    out.push_str(&policy);
    out.push('\n');
}

fn tool(name: &str, access: Access, risk: Risk, data: &[&str], groups: &[&str]) -> ToolFacts {
    ToolFacts {
        name: name.into(),
        server: name.split_once('.').unwrap().0.into(),
        trusted: false,
        class: ToolClass {
            access,
            risk,
            data_classes: data.iter().map(|d| (*d).into()).collect(),
            groups: groups.iter().map(|g| (*g).into()).collect(),
        },
    }
}

fn agent(team: &str) -> AgentFacts {
    AgentFacts {
        id: "agt_01J9Z3".into(),
        name: "reporter".into(),
        team: Some(team.into()),
        owner: Some("alice@example.com".into()),
    }
}

fn task() -> TaskFacts {
    TaskFacts {
        id: "tsk_01J9Z4".into(),
        purpose: "weekly report".into(),
        category: Some("reporting".into()),
        tools: vec!["s0.*".into(), "s1.t3".into()],
        data_classes: vec!["pii".into()],
        depth: 0,
        calls: 3,
        max_calls: Some(50),
    }
}

fn prod() -> Situation {
    Situation {
        environment: "prod".into(),
        now: 1_795_012_200, // Wednesday 2026-11-18 14:30 UTC
    }
}

/// Five leaves: `path`, `limit`, `options.recursive`, `options.pattern`, `mode`.
fn arguments() -> Value {
    json!({
        "path": "/srv/reports/2026-11.csv",
        "limit": 500,
        "options": { "recursive": false, "pattern": "*.csv" },
        "mode": "read",
    })
}

fn load(sources: &[Source]) -> Engine {
    Engine::load(sources).expect("generated policies load")
}

fn call_decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("call_decision");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let (agent, task, situation, arguments) = (agent("t0"), task(), prod(), arguments());
    for n in [10, 100, 1000] {
        let universe = Universe::for_policies(n);
        let mut rng = Rng(n as u64);
        let tools = universe.tools(&mut rng);
        let engine = load(&universe.policies(n, &mut rng));
        assert_eq!(engine.len(), n);
        let target = tools.first().unwrap();
        let decide = || engine.call(&agent, target, &task, Some(&arguments), false, &situation);
        let decision = decide();
        assert_eq!(decision.verdict, Verdict::Allow, "{decision:?}");
        eprintln!(
            "call_decision/{n}: {} tools, slice of {} policies, allowed by {:?}",
            tools.len(),
            decision.evaluated,
            decision.policies
        );
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| black_box(decide()));
        });
    }
    group.finish();
}

/// 500 tools on 10 servers, 5 groups, 8 teams, 200 policies.
fn list_universe() -> (Vec<ToolFacts>, Vec<Source>) {
    let universe = Universe {
        servers: 10,
        tools_per_server: 50,
        teams: 8,
        groups: 5,
    };
    let mut rng = Rng(500);
    let tools = universe.tools(&mut rng);
    let sources = universe.policies(200, &mut rng);
    (tools, sources)
}

/// The `tools/list` filter: how many of the tools the agent may see.
/// What a `tools/list` filter does: one context for the list, one decision per tool.
fn list(engine: &Engine, tools: &[ToolFacts], agent: &AgentFacts, task: &TaskFacts) -> usize {
    let context = engine.list_context(task, &prod()).unwrap();
    tools
        .iter()
        .filter(|tool| engine.discover_in(agent, tool, &context).is_allow())
        .count()
}

fn list_filter(c: &mut Criterion) {
    let (tools, sources) = list_universe();
    let (agent, task) = (agent("t1"), task());
    let engine = load(&sources);
    assert_eq!((tools.len(), engine.len()), (500, 200));
    let visible = list(&engine, &tools, &agent, &task);
    assert!(0 < visible && visible < tools.len(), "{visible} visible");
    eprintln!("list_filter: {visible} of {} tools visible", tools.len());

    let mut group = c.benchmark_group("list_filter");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("500_tools_200_policies", |b| {
        b.iter(|| black_box(list(&engine, &tools, &agent, &task)));
    });
    group.finish();

    let mut group = c.benchmark_group("list_filter_cold");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    group.bench_function("500_tools_200_policies", |b| {
        b.iter_batched(
            || load(&sources),
            // The engine is returned so its drop is not timed either.
            |engine| {
                let visible = list(&engine, &tools, &agent, &task);
                (engine, visible)
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, call_decision, list_filter);
criterion_main!(benches);
