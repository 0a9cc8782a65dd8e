//! `writ audit query` and `writ audit tail`: records as a table or as JSON lines, newest
//! last; `tail` then follows the log with the commit-order cursor.

use std::io::Write;
use std::time::Duration;

use serde_json::{Value, json};
use writ_audit::{Record, kinds};
use writ_store::{AuditEntry, AuditFilter, Store};

use super::{Filters, PAGE, clip, field, record_id, short_hash, utc};

/// How often `tail` looks for new records.
const POLL: Duration = Duration::from_millis(250);

/// The longest summary a table row shows, in characters.
const SUMMARY_LEN: usize = 100;

pub(super) async fn query(
    store: &dyn Store,
    filters: &Filters,
    limit: u32,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let filter = filters.resolve(store).await?;
    let (entries, more) = latest(store, &filter, limit).await?;
    if json {
        for entry in &entries {
            writeln!(out, "{}", json_line(entry))?;
        }
    } else {
        let rows: Vec<_> = entries.iter().map(|e| row(&e.record)).collect();
        let columns = Columns::fit(&rows, &[0; 8]);
        writeln!(out, "{}", columns.line(&HEADER))?;
        for row in &rows {
            writeln!(out, "{}", columns.line(row))?;
        }
    }
    if more {
        eprintln!(
            "showing the latest {limit} matching records; older ones match too \
             (narrow with `--since`, or raise `--limit`)"
        );
    } else if entries.is_empty() {
        eprintln!("no audit record matches");
    }
    Ok(())
}

/// The latest `limit` records matching `filter`, oldest first, and whether older ones
/// match too.
async fn latest(
    store: &dyn Store,
    filter: &AuditFilter,
    limit: u32,
) -> anyhow::Result<(Vec<AuditEntry>, bool)> {
    if limit == 0 {
        return Ok((Vec::new(), false));
    }
    let mut entries = store
        .audit_query(&AuditFilter {
            limit: limit.saturating_add(1),
            newest_first: true,
            ..filter.clone()
        })
        .await?;
    let more = entries.len() > limit as usize;
    entries.truncate(limit as usize);
    entries.reverse();
    Ok((entries, more))
}

pub(super) async fn tail(
    store: &dyn Store,
    filters: &Filters,
    lines: u32,
    json: bool,
    follow: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let filter = filters.resolve(store).await?;
    // Where the whole log ends now, so following starts there even when nothing matched.
    let end = store
        .audit_query(&AuditFilter {
            limit: 1,
            newest_first: true,
            ..AuditFilter::default()
        })
        .await?
        .first()
        .map(|entry| entry.position);
    let (first, _) = latest(store, &filter, lines).await?;
    let rows: Vec<_> = first.iter().map(|e| row(&e.record)).collect();
    // Later rows are not known yet: leave room for ids of the usual length.
    let columns = Columns::fit(&rows, &[24, 38, 15, 36, 36, 16, 8, 0]);
    if !json {
        writeln!(out, "{}", columns.line(&HEADER))?;
    }
    let mut cursor = end;
    for (entry, row) in first.iter().zip(&rows) {
        if json {
            writeln!(out, "{}", json_line(entry))?;
        } else {
            writeln!(out, "{}", columns.line(row))?;
        }
        cursor = cursor.max(Some(entry.position));
    }
    out.flush()?;
    if !follow {
        return Ok(());
    }
    let stop = crate::cmd::shutdown_signal();
    tokio::pin!(stop);
    let mut poll = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            () = &mut stop => return Ok(()),
            _ = poll.tick() => {}
        }
        // Drain everything new before waiting again.
        loop {
            let page = store
                .audit_query(&AuditFilter {
                    after: cursor,
                    limit: PAGE,
                    ..filter.clone()
                })
                .await?;
            for entry in &page {
                if json {
                    writeln!(out, "{}", json_line(entry))?;
                } else {
                    writeln!(out, "{}", columns.line(&row(&entry.record)))?;
                }
                cursor = Some(entry.position);
            }
            out.flush()?;
            if page.len() < PAGE as usize {
                break;
            }
        }
    }
}

/// A query result as one JSON line.
fn json_line(entry: &AuditEntry) -> Value {
    json!({
        "position": entry.position,
        "id": record_id(&entry.record),
        "record": entry.record,
    })
}

const HEADER: [&str; 8] = [
    "TIME", "ID", "KIND", "AGENT", "TASK", "TOOL", "DECISION", "SUMMARY",
];

/// A record as a table row, in [`HEADER`]'s order.
fn row(record: &Record) -> [String; 8] {
    let or_dash = |value: Option<&str>| value.unwrap_or("-").to_owned();
    [
        utc(record.time_ms),
        record_id(record),
        record.kind.clone(),
        or_dash(record.actor.first().map(String::as_str)),
        or_dash(record.task.as_deref()),
        or_dash(record.tool.as_deref()),
        or_dash(record.decision.as_deref()),
        clip(&summary(record), SUMMARY_LEN),
    ]
}

/// What a record says, in a few words.
fn summary(record: &Record) -> String {
    let text = |name: &str| field(record, name).unwrap_or_default();
    let list = |name: &str| {
        record
            .fields
            .get(name)
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .map(|item| {
                        item.as_str()
                            .map_or_else(|| item.to_string(), str::to_owned)
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let call = text("call");
    let said = match record.kind.as_str() {
        kinds::AUDIT_STARTED => format!("checkpoint key {}", text("key_id")),
        kinds::CONFIG_LOADED => format!(
            "servers {}; policy mode {} ({})",
            list("servers"),
            text("policy_mode"),
            short_hash(text("hash"))
        ),
        kinds::POLICY_LOADED => format!(
            "{} policies at {} ({})",
            record
                .fields
                .get("policies")
                .map(Value::to_string)
                .unwrap_or_default(),
            text("source"),
            short_hash(text("hash"))
        ),
        kinds::AUTH_SUCCEEDED => format!("by {}", text("method")),
        kinds::AUTH_FAILED => format!("at {}: {}", text("endpoint"), text("reason")),
        kinds::TASK_BEGUN => format!("\"{}\"", text("purpose")),
        kinds::TASK_DELEGATED => format!("from {}: \"{}\"", text("parent"), text("purpose")),
        kinds::TASK_COMPLETED | kinds::TASK_REVOKED | kinds::TASK_EXPIRED => {
            format!("{} (ended: {})", text("reason"), list("ended"))
        }
        kinds::TOOLS_DISCOVERED => format!(
            "{} shown, {} hidden",
            record
                .fields
                .get("shown")
                .and_then(Value::as_array)
                .map_or(0, Vec::len),
            // Grouped by reason: `[{reason, tools}]`.
            record
                .fields
                .get("hidden")
                .and_then(Value::as_array)
                .map_or(0, |groups| groups
                    .iter()
                    .filter_map(|g| g.get("tools").and_then(Value::as_array))
                    .map(Vec::len)
                    .sum())
        ),
        kinds::CALL_DECIDED | kinds::CALL_DEVIATION => format!("{call} {}", text("reason")),
        kinds::CALL_FORWARDED => format!(
            "{call} to {} with {}",
            text("server"),
            field(record, "credential").unwrap_or("no credential")
        ),
        kinds::CALL_COMPLETED => format!(
            "{call} {} in {} ms",
            text("status"),
            record
                .fields
                .get("latency_ms")
                .map(Value::to_string)
                .unwrap_or_default()
        ),
        kinds::TOOL_DRIFTED | kinds::TOOL_ACCEPTED => format!("on {}", text("server")),
        kinds::KEY_ROTATED => format!("signing with {}", text("signing")),
        _ => call.to_owned(),
    };
    said.trim().to_owned()
}

/// Column widths for a table whose last column is not padded.
#[derive(Debug)]
struct Columns(Vec<usize>);

impl Columns {
    /// Wide enough for the header, every row and the given minimums.
    fn fit(rows: &[[String; 8]], minimums: &[usize; 8]) -> Self {
        let widths = (0..HEADER.len())
            .map(|i| {
                let cells = rows.iter().filter_map(|row| row.get(i));
                let header = HEADER.get(i).map_or(0, |h| h.chars().count());
                let minimum = minimums.get(i).copied().unwrap_or(0);
                cells
                    .map(|cell| cell.chars().count())
                    .chain([header, minimum])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        Columns(widths)
    }

    fn line<S: AsRef<str>>(&self, cells: &[S]) -> String {
        let mut line = String::new();
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.iter().enumerate() {
            let cell = cell.as_ref();
            if i == last {
                line.push_str(cell);
            } else {
                let width = self.0.get(i).copied().unwrap_or(0);
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        line.trim_end().to_owned()
    }
}
