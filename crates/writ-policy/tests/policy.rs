//! The policy engine against real Cedar: the example pack's cases, each kind of bad
//! policy input, slicing that never changes a decision, and arguments in every shape.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests fail loudly on the first surprise"
)]

use std::path::PathBuf;

use serde_json::json;
use writ_core::tools::{Access, Risk, ToolClass};
use writ_policy::{
    AgentFacts, Engine, MAX_ARGUMENT_DEPTH, Situation, Source, TaskFacts, ToolFacts, Verdict,
    run_cases,
};

fn pack_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies")
}

fn source(name: &str, text: &str) -> Source {
    Source {
        name: name.into(),
        text: text.into(),
    }
}

/// Why a one-file policy set was refused.
fn refused(name: &str, text: &str) -> String {
    Engine::load(&[source(name, text)]).unwrap_err().to_string()
}

fn agent(name: &str, team: Option<&str>) -> AgentFacts {
    AgentFacts {
        id: format!("agt_{name}"),
        name: name.into(),
        team: team.map(Into::into),
        owner: None,
    }
}

fn tool(name: &str, access: Access, risk: Risk) -> ToolFacts {
    ToolFacts {
        name: name.into(),
        server: name.split_once('.').unwrap().0.into(),
        trusted: false,
        class: ToolClass {
            access,
            risk,
            data_classes: vec![],
            groups: vec![],
        },
    }
}

fn task() -> TaskFacts {
    TaskFacts {
        id: "tsk_1".into(),
        purpose: "test".into(),
        tools: vec!["*".into()],
        ..TaskFacts::default()
    }
}

fn prod() -> Situation {
    Situation {
        environment: "prod".into(),
        now: 1_795_012_200, // Wednesday 2026-11-18 14:30 UTC
    }
}

#[test]
fn the_example_pack_passes_its_own_cases() {
    let engine = Engine::load_dir(&pack_dir()).unwrap();
    assert!(engine.len() >= 10, "{}", engine.len());
    assert!(engine.warnings().is_empty(), "{:?}", engine.warnings());
    let text = std::fs::read_to_string(pack_dir().join("tests/pack.toml")).unwrap();
    let outcomes = run_cases(&engine, &text).unwrap();
    assert!(outcomes.len() >= 20);
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.failure.as_ref().map(|f| format!("{}: {f}", o.name)))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn a_wrong_expectation_fails_its_case_and_says_why() {
    let engine = Engine::load_dir(&pack_dir()).unwrap();
    let outcomes = run_cases(
        &engine,
        r#"
[[case]]
name = "wrongly expected"
agent = "nobody"
action = "call"
tool = "notes.write"
expect = "allow"
policies = ["research-writes-notes"]
"#,
    )
    .unwrap();
    let failure = outcomes[0].failure.as_deref().unwrap();
    assert!(failure.contains("expected allow, got deny"), "{failure}");
    assert!(failure.contains("expected deciding policies [research-writes-notes], got []"));
    let empty = run_cases(&engine, "").unwrap_err().to_string();
    assert!(empty.contains("no `[[case]]`"), "{empty}");
    let unknown = run_cases(
        &engine,
        "[[case]]\nname = \"x\"\nagent = \"a\"\naction = \"dance\"\nexpect = \"allow\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(unknown.contains("unknown action `dance`"), "{unknown}");
}

#[test]
fn a_syntax_error_names_the_file_and_line() {
    let err = Engine::load(&[
        source("good.cedar", "permit(principal, action, resource);"),
        source(
            "bad.cedar",
            "permit(principal, action, resource);\n\nforbid(principal action, resource);",
        ),
    ])
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("bad.cedar:3: syntax error"), "{err}");
}

#[test]
fn a_schema_violation_names_the_policy() {
    let err = refused(
        "typo.cedar",
        "@id(\"reads\")\npermit(principal, action == Writ::Action::\"call\", resource)\nwhen { resource.acess == \"read\" };",
    );
    assert!(err.contains("typo.cedar:"), "{err}");
    assert!(
        err.contains("policy `reads` does not fit Writ's schema"),
        "{err}"
    );
    assert!(err.contains("acess"), "{err}");
}

#[test]
fn an_unknown_entity_type_is_refused() {
    let err = refused(
        "users.cedar",
        "permit(principal == Writ::User::\"alice\", action, resource);",
    );
    assert!(err.contains("users.cedar:1"), "{err}");
    assert!(err.contains("Writ::User"), "{err}");
}

#[test]
fn an_unknown_context_field_for_the_action_is_refused() {
    // `approved` exists for `call` only; a discover policy cannot read it.
    let err = refused(
        "x.cedar",
        "permit(principal, action == Writ::Action::\"discover\", resource) when { context.approved };",
    );
    assert!(err.contains("approved"), "{err}");
}

#[test]
fn duplicate_ids_templates_and_misplaced_approvals_are_refused() {
    let twice = Engine::load(&[
        source("a.cedar", "@id(\"p\") permit(principal, action, resource);"),
        source("b.cedar", "@id(\"p\") permit(principal, action, resource);"),
    ])
    .unwrap_err()
    .to_string();
    assert!(twice.contains("b.cedar: policy `p`"), "{twice}");
    let template = refused(
        "t.cedar",
        "permit(principal == ?principal, action, resource);",
    );
    assert!(template.contains("templates"), "{template}");
    let approval = refused(
        "p.cedar",
        "@approval(\"security\") permit(principal, action, resource);",
    );
    assert!(approval.contains("only applies to `forbid`"), "{approval}");
}

#[test]
fn an_empty_set_denies_everything() {
    for engine in [Engine::empty(), Engine::load(&[]).unwrap()] {
        assert!(engine.is_empty());
        let d = engine.call(
            &agent("a", None),
            &tool("notes.read", Access::Read, Risk::Low),
            &task(),
            None,
            false,
            &prod(),
        );
        assert_eq!(d.verdict, Verdict::Deny);
        assert_eq!(d.reasons, ["no policy permits `call` here"]);
        let d = engine.begin_task(&agent("a", None), &task(), &prod());
        assert_eq!(d.verdict, Verdict::Deny);
    }
}

#[test]
fn ids_default_to_file_and_ordinal_and_decisions_name_them() {
    let engine = Engine::load(&[source(
        "base.cedar",
        "permit(principal, action == Writ::Action::\"discover\", resource);\n\
         permit(principal, action == Writ::Action::\"call\", resource) when { resource.access == \"read\" };",
    )])
    .unwrap();
    assert_eq!(engine.policy_ids(), ["base.cedar:1", "base.cedar:2"]);
    let d = engine.call(
        &agent("a", None),
        &tool("notes.read", Access::Read, Risk::Low),
        &task(),
        None,
        false,
        &prod(),
    );
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(d.policies, ["base.cedar:2"]);
    assert_eq!(d.reasons, ["policy `base.cedar:2` permits it"]);
}

/// Slicing by action, principal and resource is an optimisation only: every request gets
/// the same decision from its slice as from a reference set with the same policies
/// written with open scopes (conditions instead), and as from plain Cedar over the whole
/// reference set.
#[test]
fn slices_decide_exactly_as_the_whole_set() {
    let (mut scoped, mut open) = (String::new(), String::new());
    for i in 0..60 {
        let server = format!("s{}", i % 6);
        let (team, level) = (i % 3, i % 4);
        scoped.push_str(&format!(
            "@id(\"tool-{i}\") permit(principal, action == Writ::Action::\"call\", resource == Writ::Tool::\"{server}.t{i}\");\n\
             @id(\"server-{i}\") forbid(principal in Writ::Team::\"t{team}\", action == Writ::Action::\"call\", resource in Writ::Server::\"{server}\") when {{ resource.risk_level > {level} }};\n"
        ));
        open.push_str(&format!(
            "@id(\"tool-{i}\") permit(principal, action, resource) when {{ action == Writ::Action::\"call\" && resource == Writ::Tool::\"{server}.t{i}\" }};\n\
             @id(\"server-{i}\") forbid(principal, action, resource) when {{ principal in Writ::Team::\"t{team}\" && action == Writ::Action::\"call\" && resource in Writ::Server::\"{server}\" && resource.risk_level > {level} }};\n"
        ));
    }
    // Prompts and resources are in groups too; `is Writ::Tool` keeps `access` readable.
    scoped.push_str("@id(\"group\") permit(principal, action, resource is Writ::Tool in Writ::ToolGroup::\"g\") when { resource.access == \"read\" };\n");
    open.push_str("@id(\"group\") permit(principal, action, resource) when { resource is Writ::Tool && resource in Writ::ToolGroup::\"g\" && resource.access == \"read\" };\n");
    for text in [&mut scoped, &mut open] {
        text.push_str("@id(\"busy\") forbid(principal, action == Writ::Action::\"call\", resource) when { context.task.calls > 3 };\n");
    }
    let engine = Engine::load(&[source("scoped.cedar", &scoped)]).unwrap();
    let reference = Engine::load(&[source("open.cedar", &open)]).unwrap();
    let mut compared = 0;
    for i in 0..60 {
        for team in ["t0", "t1", "t2"] {
            for (access, risk) in [(Access::Read, Risk::Low), (Access::Write, Risk::Critical)] {
                for groups in [vec![], vec!["g".to_owned()]] {
                    for calls in [0, 5] {
                        let mut t = tool(&format!("s{}.t{i}", i % 6), access, risk);
                        t.class.groups = groups.clone();
                        let task = TaskFacts { calls, ..task() };
                        let a = agent("a", Some(team));
                        let sliced = engine.call(&a, &t, &task, None, false, &prod());
                        let open = reference.call(&a, &t, &task, None, false, &prod());
                        let plain = reference.call_unoptimised(&a, &t, &task, None, false, &prod());
                        for other in [&open, &plain] {
                            assert_eq!(sliced.verdict, other.verdict, "{t:?} {team} {calls}");
                            assert_eq!(sliced.policies, other.policies, "{t:?} {team} {calls}");
                        }
                        // Only the busy rule reads the context; the tool's permit, its
                        // server's forbids for the agent's team and the group rule are
                        // decided when the slice is built.
                        assert_eq!(sliced.evaluated, 1);
                        assert_eq!(plain.evaluated, 122);
                        compared += 1;
                    }
                }
            }
        }
    }
    assert_eq!(compared, 60 * 3 * 2 * 2 * 2);
}

/// The fast path (slices by action, principal and resource; context-free policies
/// decided once per slice; context built from what the rest read) against every `call`
/// policy evaluated by Cedar with the whole context, over many agents, tools, tasks,
/// arguments and times.
#[test]
fn the_fast_path_decides_as_plain_cedar_does() {
    let mut text = String::new();
    for i in 0..40 {
        let (server, team, level) = (format!("s{}", i % 4), i % 3, i % 4);
        text.push_str(&format!(
            "permit(principal in Writ::Team::\"t{team}\", action == Writ::Action::\"call\", resource == Writ::Tool::\"{server}.x{i}\");\n\
             permit(principal == Writ::Agent::\"a{team}\", action == Writ::Action::\"call\", resource in Writ::Server::\"{server}\") when {{ context.time.hour >= {level} }};\n\
             forbid(principal, action == Writ::Action::\"call\", resource in Writ::Server::\"{server}\") when {{ resource.risk_level > {level} && context.task.calls > {i} }};\n\
             @approval(\"g{team}\") forbid(principal in Writ::Team::\"t{team}\", action == Writ::Action::\"call\", resource in Writ::ToolGroup::\"g{level}\") unless {{ context.approved }};\n\
             forbid(principal, action == Writ::Action::\"call\", resource == Writ::Tool::\"{server}.x{i}\") when {{ resource.access == \"execute\" }};\n"
        ));
    }
    text.push_str(
        "permit(principal, action == Writ::Action::\"call\", resource) when { resource.access == \"read\" };\n\
         forbid(principal, action == Writ::Action::\"call\", resource) when { context.arguments.hasTag(\"path\") && context.arguments.getTag(\"path\") like \"/etc/*\" };\n\
         forbid(principal, action == Writ::Action::\"call\", resource) when { context has arguments_omitted && context.arguments_omitted };\n\
         forbid(principal, action == Writ::Action::\"call\", resource) when { principal.owner == \"mallory\" };\n",
    );
    let engine = Engine::load(&[source("mixed.cedar", &text)]).unwrap();
    let accesses = [Access::Read, Access::Write, Access::Execute];
    let risks = [Risk::Low, Risk::Medium, Risk::High, Risk::Critical];
    let mut compared = 0;
    for i in 0..40 {
        for (a, team) in [
            ("a0", Some("t0")),
            ("a1", Some("t1")),
            ("b", Some("t2")),
            ("lone", None),
        ] {
            let mut who = agent(a, team);
            if i % 7 == 0 {
                who.owner = Some("mallory".into());
            }
            let mut t = tool(&format!("s{}.x{i}", i % 4), accesses[i % 3], risks[i % 4]);
            t.class.groups = vec![format!("g{}", i % 4)];
            for (calls, hour, args, approved) in [
                (0, 1, json!({ "path": "/home" }), false),
                (50, 12, json!({ "path": "/etc/passwd" }), false),
                (3, 5, json!({ "n": 1 }), true),
            ] {
                let task = TaskFacts { calls, ..task() };
                let situation = Situation {
                    environment: "prod".into(),
                    now: 1_795_046_400 + hour * 3600,
                };
                let fast = engine.call(&who, &t, &task, Some(&args), approved, &situation);
                let plain =
                    engine.call_unoptimised(&who, &t, &task, Some(&args), approved, &situation);
                assert_eq!(fast.verdict, plain.verdict, "{a} {t:?} {calls} {hour}");
                assert_eq!(fast.policies, plain.policies, "{a} {t:?} {calls} {hour}");
                assert!(fast.evaluated <= plain.evaluated);
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 40 * 4 * 3);
}

#[test]
fn arguments_reach_policy_as_tags_and_oversized_ones_are_flagged() {
    let engine = Engine::load(&[source(
        "args.cedar",
        r#"
permit(principal, action == Writ::Action::"call", resource);
@id("no-etc") forbid(principal, action == Writ::Action::"call", resource)
  when { context.arguments.hasTag("path") && context.arguments.getTag("path") like "/etc/*" };
@id("small-amounts") forbid(principal, action == Writ::Action::"call", resource)
  when { context.argument_numbers.hasTag("order.amount") && context.argument_numbers.getTag("order.amount") > 1000 };
@id("see-everything") forbid(principal, action == Writ::Action::"call", resource)
  when { context.arguments_omitted };
"#,
    )])
    .unwrap();
    let decide = |args: serde_json::Value| {
        engine.call(
            &agent("a", None),
            &tool("fs.read", Access::Read, Risk::Low),
            &task(),
            Some(&args),
            false,
            &prod(),
        )
    };
    assert!(decide(json!({ "path": "/home/a" })).is_allow());
    assert_eq!(
        decide(json!({ "path": "/etc/passwd" })).policies,
        ["no-etc"]
    );
    assert!(decide(json!({ "order": { "amount": 999 } })).is_allow());
    assert_eq!(
        decide(json!({ "order": { "amount": 5000 } })).policies,
        ["small-amounts"]
    );
    // Floats, nulls and booleans are text; only integers are numbers.
    assert!(decide(json!({ "order": { "amount": 5000.5 } })).is_allow());
    let mut deep = json!("x");
    for _ in 0..=MAX_ARGUMENT_DEPTH {
        deep = json!({ "d": deep });
    }
    assert_eq!(decide(deep).policies, ["see-everything"]);
    let huge: serde_json::Map<_, _> = (0..10_000).map(|i| (format!("k{i}"), json!(i))).collect();
    assert_eq!(
        decide(serde_json::Value::Object(huge)).policies,
        ["see-everything"]
    );
}

#[test]
fn an_approval_forbid_with_a_plain_forbid_is_a_plain_deny() {
    let engine = Engine::load(&[source(
        "x.cedar",
        r#"
permit(principal, action, resource);
@id("needs-ok") @approval("security") forbid(principal, action == Writ::Action::"call", resource) unless { context.approved };
@id("never-prod") forbid(principal, action == Writ::Action::"call", resource) when { context.environment == "prod" };
"#,
    )])
    .unwrap();
    let t = tool("x.y", Access::Read, Risk::Low);
    let d = engine.call(&agent("a", None), &t, &task(), None, false, &prod());
    assert_eq!(d.verdict, Verdict::Deny);
    assert_eq!(d.policies, ["needs-ok", "never-prod"]);
    let staging = Situation {
        environment: "staging".into(),
        ..prod()
    };
    let d = engine.call(&agent("a", None), &t, &task(), None, false, &staging);
    assert_eq!(
        d.verdict,
        Verdict::ApprovalRequired {
            groups: vec!["security".into()]
        }
    );
    assert!(
        engine
            .call(&agent("a", None), &t, &task(), None, true, &staging)
            .is_allow()
    );
}

#[test]
fn the_schema_ships_and_parses() {
    assert!(writ_policy::schema::SCHEMA_TEXT.contains("namespace Writ"));
    // Parsing is lazy; a policy using every entity type validates only if it parsed.
    Engine::load(&[source(
        "all.cedar",
        "permit(principal in Writ::Team::\"t\", action in [Writ::Action::\"discover\", Writ::Action::\"call\"], resource in Writ::ToolGroup::\"g\") when { resource in Writ::Server::\"s\" };",
    )])
    .unwrap();
}
