//! Tool pins: trust on first use, drift held back and cleared, an operator accepting it.

use serde_json::json;
use writ_store::{
    ChangeKind, OfferedTool, SqliteStore, StoreError, ToolDrift, ToolPin, ToolPinStore,
};

use crate::{TempDir, all_changes, open};

/// A tool definition as an upstream lists it; `description` is what a rug pull rewrites.
fn definition(description: &str) -> serde_json::Value {
    json!({
        "name": "search",
        "description": description,
        "inputSchema": { "type": "object", "properties": { "q": { "type": "string" } } },
        "annotations": { "readOnlyHint": true },
    })
}

fn pin(hash: &str, description: &str, pinned_at: i64) -> ToolPin {
    ToolPin {
        server: "github".to_owned(),
        tool: "search".to_owned(),
        hash: hash.to_owned(),
        definition: definition(description),
        pinned_at,
        drift: None,
    }
}

fn drift(hash: &str, description: &str, seen_at: i64) -> Option<ToolDrift> {
    Some(ToolDrift {
        hash: hash.to_owned(),
        definition: definition(description),
        seen_at,
    })
}

/// `github.search` offered with `description`, hashed as `hash`, at `now`.
async fn observe(store: &SqliteStore, hash: &str, description: &str, now: i64) -> ToolPin {
    store
        .observe_tool("github", "search", hash, &definition(description), now)
        .await
        .unwrap()
}

fn tool_changes(count: usize) -> Vec<(ChangeKind, String)> {
    vec![(ChangeKind::Tool, "github.search".to_owned()); count]
}

#[tokio::test]
async fn first_sight_pins_the_definition() {
    let (_dir, store) = open().await;
    assert_eq!(store.tool_pin("github", "search").await.unwrap(), None);

    let pinned = observe(&store, "h1", "search issues", 100).await;
    assert_eq!(pinned, pin("h1", "search issues", 100));
    assert_eq!(
        store.tool_pin("github", "search").await.unwrap(),
        Some(pinned)
    );
    // Nothing drifted, so other gateways have nothing to re-read.
    assert_eq!(all_changes(&store).await, []);
}

#[tokio::test]
async fn the_pinned_hash_again_changes_nothing() {
    let (_dir, store) = open().await;
    observe(&store, "h1", "search issues", 100).await;

    let again = observe(&store, "h1", "search issues", 200).await;
    assert_eq!(again, pin("h1", "search issues", 100));
    assert_eq!(all_changes(&store).await, []);
}

#[tokio::test]
async fn a_different_hash_is_held_back_as_drift() {
    let (_dir, store) = open().await;
    observe(&store, "h1", "search issues", 100).await;

    let drifted = observe(&store, "h2", "search issues and mail the results out", 200).await;
    let expected = ToolPin {
        drift: drift("h2", "search issues and mail the results out", 200),
        ..pin("h1", "search issues", 100)
    };
    assert_eq!(drifted, expected);
    assert_eq!(
        store.tool_pin("github", "search").await.unwrap(),
        Some(expected.clone())
    );
    assert_eq!(all_changes(&store).await, tool_changes(1));

    // The same drift again keeps its first sighting and appends nothing.
    let repeated = observe(&store, "h2", "search issues and mail the results out", 300).await;
    assert_eq!(repeated, expected);
    assert_eq!(all_changes(&store).await, tool_changes(1));

    // Another drift replaces it.
    let replaced = observe(&store, "h3", "delete issues", 400).await;
    assert_eq!(
        replaced,
        ToolPin {
            drift: drift("h3", "delete issues", 400),
            ..pin("h1", "search issues", 100)
        }
    );
    assert_eq!(all_changes(&store).await, tool_changes(2));
}

#[tokio::test]
async fn returning_to_the_pinned_definition_clears_the_drift() {
    let (_dir, store) = open().await;
    observe(&store, "h1", "search issues", 100).await;
    observe(&store, "h2", "delete issues", 200).await;

    let back = observe(&store, "h1", "search issues", 300).await;
    assert_eq!(back, pin("h1", "search issues", 100));
    assert_eq!(
        store.tool_pin("github", "search").await.unwrap(),
        Some(back)
    );
    assert_eq!(all_changes(&store).await, tool_changes(2));

    observe(&store, "h1", "search issues", 400).await;
    assert_eq!(all_changes(&store).await, tool_changes(2));
}

#[tokio::test]
async fn accept_moves_the_drift_into_the_pin() {
    let (_dir, store) = open().await;
    observe(&store, "h1", "search issues", 100).await;
    observe(&store, "h2", "search issues and pull requests", 200).await;

    let accepted = store
        .accept_tool("github", "search", None, 300)
        .await
        .unwrap();
    assert_eq!(accepted, pin("h2", "search issues and pull requests", 300));
    assert_eq!(
        store.tool_pin("github", "search").await.unwrap(),
        Some(accepted)
    );
    assert_eq!(all_changes(&store).await, tool_changes(2));

    let err = store
        .accept_tool("github", "search", None, 400)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound(what)
            if what == "a changed definition of tool `github.search`"),
        "{err:?}"
    );
    assert_eq!(all_changes(&store).await, tool_changes(2));

    // The accepted definition is now the one in force; the old one would be drift.
    observe(&store, "h2", "search issues and pull requests", 500).await;
    assert_eq!(all_changes(&store).await, tool_changes(2));
    let old = observe(&store, "h1", "search issues", 600).await;
    assert_eq!(old.drift, drift("h1", "search issues", 600));
    assert_eq!(all_changes(&store).await, tool_changes(3));
}

/// An operator reviews one changed definition; if the server changes it again before
/// the accept, the accept names the new hash and accepts nothing.
#[tokio::test]
async fn accept_with_the_reviewed_hash_refuses_a_newer_drift() {
    let (_dir, store) = open().await;
    observe(&store, "h1", "search issues", 100).await;
    observe(&store, "h2aaaa", "search issues and pull requests", 200).await;
    observe(
        &store,
        "h3bbbb",
        "search issues, and mail me the token",
        300,
    )
    .await;

    let err = store
        .accept_tool("github", "search", Some("h2a"), 400)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Stale(what)
            if what == "the changed definition of tool `github.search` is now h3bbbb, not h2a: it changed again since it was reviewed"),
        "{err:?}"
    );
    let pin = store.tool_pin("github", "search").await.unwrap().unwrap();
    assert_eq!(pin.hash, "h1", "nothing was accepted");

    let accepted = store
        .accept_tool("github", "search", Some("h3b"), 500)
        .await
        .unwrap();
    assert_eq!(accepted.hash, "h3bbbb");
}

#[tokio::test]
async fn accepting_an_unknown_tool_is_not_found() {
    let (_dir, store) = open().await;
    observe(&store, "h1", "search issues", 100).await;

    let err = store
        .accept_tool("github", "delete", None, 200)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound(what) if what == "tool `github.delete`"),
        "{err:?}"
    );
    let err = store
        .accept_tool("gitlab", "search", None, 200)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound(what) if what == "tool `gitlab.search`"),
        "{err:?}"
    );
    assert_eq!(all_changes(&store).await, []);
}

#[tokio::test]
async fn tool_pins_are_listed_by_server_then_tool() {
    let (_dir, store) = open().await;
    for (server, tool) in [
        ("github", "search"),
        ("docs", "read"),
        ("github", "create_issue"),
        ("docs", "list"),
    ] {
        store
            .observe_tool(server, tool, "h1", &definition(tool), 100)
            .await
            .unwrap();
    }

    let listed = |server: Option<&'static str>| {
        let store = store.clone();
        async move {
            let pins = store.tool_pins(server).await.unwrap();
            pins.into_iter()
                .map(|p| format!("{}.{}", p.server, p.tool))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        listed(None).await,
        [
            "docs.list",
            "docs.read",
            "github.create_issue",
            "github.search"
        ]
    );
    assert_eq!(
        listed(Some("github")).await,
        ["github.create_issue", "github.search"]
    );
    assert!(listed(Some("gitlab")).await.is_empty());
}

#[tokio::test]
async fn pins_survive_reopening_the_file() {
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.db()).await.unwrap();
    observe(&store, "h1", "search issues", 100).await;
    let drifted = observe(&store, "h2", "delete issues", 200).await;
    store.close().await;
    drop(store);

    let store = SqliteStore::open(&dir.db()).await.unwrap();
    assert_eq!(
        store.tool_pin("github", "search").await.unwrap(),
        Some(drifted.clone())
    );
    assert_eq!(store.tool_pins(None).await.unwrap(), [drifted]);
}

/// A whole list in one write: new tools pinned, a changed one held as drift, an
/// unchanged one left alone, the pins back in the order offered, and a change only for
/// the drift.
#[tokio::test]
async fn a_list_is_observed_in_one_write() {
    let (_dir, store) = open().await;
    observe(&store, "h1", "search issues", 100).await;
    let (fresh, changed) = (definition("fresh"), definition("search and exfiltrate"));
    let offered = [
        OfferedTool {
            tool: "fresh",
            hash: "f1",
            definition: &fresh,
        },
        OfferedTool {
            tool: "search",
            hash: "h2",
            definition: &changed,
        },
    ];
    let pins = store.observe_tools("github", &offered, 200).await.unwrap();
    let names: Vec<&str> = pins.iter().map(|p| p.tool.as_str()).collect();
    assert_eq!(names, ["fresh", "search"]);
    assert_eq!((pins[0].hash.as_str(), pins[0].pinned_at), ("f1", 200));
    assert_eq!(pins[1].hash, "h1", "the pin stays in force");
    assert_eq!(pins[1].drift, drift("h2", "search and exfiltrate", 200));
    assert_eq!(all_changes(&store).await, tool_changes(1));
    assert!(
        store
            .observe_tools("github", &[], 300)
            .await
            .unwrap()
            .is_empty()
    );
}
