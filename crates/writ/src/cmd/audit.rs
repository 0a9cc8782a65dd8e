//! `writ audit`: reading the audit log. `verify` recomputes every writer's chain;
//! `query` and `tail` find records; `explain` tells the story of one call; `export`
//! hands the log to other tools; `prune` applies retention by hand.
//!
//! Output goes through `writeln!` rather than `println!`, so piping into `head` ends the
//! command quietly instead of panicking on a closed stdout.

mod explain;
mod export;
mod query;
mod story;
mod verify;

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::Value;
use writ_audit::{Record, is_valid_kind, kinds};
use writ_store::{AuditFilter, Store};

/// Records read per round trip when paging through the log.
const PAGE: u32 = 1_000;

/// Decisions the gateway records.
const DECISIONS: &[&str] = &["allow", "deny", "approval_required", "held", "deviation"];

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: super::ConfigArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Recompute every chain and checkpoint; name the first bad record and exit non-zero.
    Verify,
    /// Find records, oldest first; without `--limit`, the latest 100 that match.
    Query {
        #[command(flatten)]
        filters: Filters,
        /// At most this many records: the latest that match.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
        /// One JSON object per line: `position`, `id` and the whole `record`.
        #[arg(long)]
        json: bool,
    },
    /// Tell the story of one call: who, under which task, decided how and why, what
    /// happened next. Takes a call id (`c_…`) or a record id (`writer:seq`).
    Explain {
        id: String,
        /// One JSON object with the story's parts.
        #[arg(long)]
        json: bool,
    },
    /// Write every matching record out, oldest first, for another system.
    Export {
        /// `jsonl`: one stored record per line, as sealed (re-verifiable); `otlp`: one
        /// OTLP/JSON `ExportLogsServiceRequest` per line, up to 1,000 records each.
        #[arg(long, value_enum)]
        format: export::Format,
        /// Write to this file instead of stdout.
        #[arg(long, conflicts_with = "endpoint")]
        out: Option<std::path::PathBuf>,
        /// POST to this OTLP/HTTP collector instead (`http://collector:4318`; `/v1/logs`
        /// is added unless the URL ends with it). Needs `--format otlp`.
        #[arg(long)]
        endpoint: Option<String>,
        #[command(flatten)]
        filters: Filters,
    },
    /// Print the latest records, then new ones as they are committed, until Ctrl-C.
    Tail {
        /// How many records to print first.
        #[arg(short = 'n', long = "lines", default_value_t = 10)]
        lines: u32,
        #[command(flatten)]
        filters: Filters,
        /// One JSON object per line, as `query --json`.
        #[arg(long)]
        json: bool,
        /// Stop after the first records instead of following the log.
        #[arg(long)]
        no_follow: bool,
    },
    /// Remove records sealed before a time; each chain keeps an anchor so what remains
    /// still verifies.
    Prune {
        /// RFC 3339 (`2026-08-01T00:00:00Z`) or a duration back from now (`90d`).
        #[arg(long, value_parser = parse_time, required_unless_present = "older_than")]
        before: Option<i64>,
        /// A duration back from now (`90d`); the same as `--before 90d`.
        #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "before")]
        older_than: Option<Duration>,
    },
}

/// Which records a command reads. Every filter given must hold.
#[derive(Debug, Clone, clap::Args)]
struct Filters {
    /// An agent (id or registered name) anywhere in the actor chain: acting, or acted for.
    #[arg(long)]
    agent: Option<String>,
    #[arg(long)]
    task: Option<String>,
    /// A tool, as `server.tool`.
    #[arg(long)]
    tool: Option<String>,
    /// A kind (`call.decided`), or every kind under a prefix (`call.*`).
    #[arg(long)]
    kind: Option<String>,
    /// allow, deny, approval_required, held or deviation.
    #[arg(long)]
    decision: Option<String>,
    /// A call id (`c_…`): every record of that call.
    #[arg(long)]
    call: Option<String>,
    /// At or after this time: RFC 3339 (`2026-11-21T10:00:00Z`) or a duration back from
    /// now (`15m`, `2h`, `7d`).
    #[arg(long, value_parser = parse_time)]
    since: Option<i64>,
    /// Before this time, in the same forms as `--since`.
    #[arg(long, value_parser = parse_time)]
    until: Option<i64>,
}

/// `writ audit explain ID` as text, for the demo's tour.
pub(super) async fn explain_to(
    store: &dyn Store,
    id: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    explain::explain(store, id, false, out).await
}

/// `writ audit verify`, for the demo's tour.
pub(super) async fn verify_to(store: &dyn Store, out: &mut impl Write) -> anyhow::Result<()> {
    verify::verify(store, out).await
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let store = super::open_store(&config).await?;
    let store = store.as_ref();
    let mut out = std::io::stdout();
    let done = match args.command {
        Command::Verify => verify::verify(store, &mut out).await,
        Command::Query {
            filters,
            limit,
            json,
        } => query::query(store, &filters, limit, json, &mut out).await,
        Command::Explain { id, json } => explain::explain(store, &id, json, &mut out).await,
        Command::Export {
            format,
            out: file,
            endpoint,
            filters,
        } => {
            let filter = filters.resolve(store).await?;
            export::export(
                store,
                filter,
                format,
                file.as_deref(),
                endpoint.as_deref(),
                &mut out,
            )
            .await
        }
        Command::Tail {
            lines,
            filters,
            json,
            no_follow,
        } => query::tail(store, &filters, lines, json, !no_follow, &mut out).await,
        Command::Prune { before, older_than } => {
            let before = match (before, older_than) {
                (Some(before), _) => before,
                (None, Some(age)) => ago(age)?,
                (None, None) => bail!("say which records to remove: `--before` or `--older-than`"),
            };
            prune(store, before, &mut out).await
        }
    };
    match done {
        // The reader went away (`writ audit query | head`): nothing left to do.
        Err(err) if closed_pipe(&err) => Ok(()),
        other => other,
    }
}

fn closed_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

impl Filters {
    /// The store's filter, with an agent name resolved to its id and the rest checked.
    async fn resolve(&self, store: &dyn Store) -> anyhow::Result<AuditFilter> {
        if let Some(kind) = &self.kind {
            let exact = kind.strip_suffix(".*");
            if !is_valid_kind(exact.unwrap_or(kind)) {
                bail!("`{kind}` is not an event kind: use one like `call.decided`, or `call.*`");
            }
            if exact.is_none() && !kinds::ALL.contains(&kind.as_str()) {
                eprintln!("note: this writ knows no kind `{kind}`; matching it exactly");
            }
        }
        if let Some(decision) = &self.decision
            && !DECISIONS.contains(&decision.as_str())
        {
            eprintln!(
                "note: the gateway records decisions {}; matching `{decision}` exactly",
                DECISIONS.join(", ")
            );
        }
        if let (Some(since), Some(until)) = (self.since, self.until)
            && since >= until
        {
            bail!("`--since` must be before `--until`");
        }
        let agent = match &self.agent {
            None => None,
            // Records name agents by id; a registered name is a convenience.
            Some(agent) => Some(match store.agent(agent).await? {
                Some(found) => found.id,
                None => agent.clone(),
            }),
        };
        Ok(AuditFilter {
            agent,
            task: self.task.clone(),
            tool: self.tool.clone(),
            kind: self.kind.clone(),
            decision: self.decision.clone(),
            call: self.call.clone(),
            since_ms: self.since,
            until_ms: self.until,
            ..AuditFilter::default()
        })
    }
}

async fn prune(store: &dyn Store, before: i64, out: &mut impl Write) -> anyhow::Result<()> {
    if before > now_ms() {
        bail!("`--before` is in the future: that would remove records not sealed yet");
    }
    let pruned = store.prune_audit(before).await?;
    if pruned.anchors.is_empty() {
        writeln!(
            out,
            "no audit record was sealed before {}: nothing removed",
            utc(before)
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "removed {} records sealed before {}",
        pruned.records,
        utc(before)
    )?;
    for (writer, seq) in &pruned.anchors {
        let hash = store
            .audit_anchor(writer)
            .await?
            .map(|(_, hash)| hash)
            .unwrap_or_default();
        writeln!(
            out,
            "{writer}: records up to {seq} removed; the chain now starts at anchor {seq} ({})",
            short_hash(&hash)
        )?;
    }
    writeln!(
        out,
        "`writ audit verify` checks what remains against these anchors"
    )?;
    Ok(())
}

// ----- shared by the subcommands -----

/// A record's id, as `explain` takes it: `writer:seq`.
fn record_id(record: &Record) -> String {
    format!("{}:{}", record.writer, record.seq)
}

/// A string field of a record.
fn field<'a>(record: &'a Record, name: &str) -> Option<&'a str> {
    record.fields.get(name).and_then(Value::as_str)
}

/// The call a record belongs to, if any.
fn call_of(record: &Record) -> Option<&str> {
    field(record, "call")
}

/// Milliseconds since the epoch as RFC 3339 UTC to the millisecond.
fn utc(ms: i64) -> String {
    // humantime formats years 1970 to 9999; anything else is shown as it is stored.
    const END: u64 = 253_402_300_800_000;
    match u64::try_from(ms) {
        Ok(ms) if ms < END => {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        _ => format!("{ms} ms since 1970"),
    }
}

/// Unix seconds as RFC 3339 UTC.
fn utc_seconds(seconds: i64) -> String {
    utc(seconds.saturating_mul(1_000))
}

fn short_hash(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn ago(age: Duration) -> anyhow::Result<i64> {
    let age = i64::try_from(age.as_millis()).context("that duration is too long")?;
    Ok(now_ms().saturating_sub(age))
}

/// A time given on the command line: RFC 3339 (UTC, `Z` or an offset), a date (its
/// midnight UTC), or a duration back from now.
fn parse_time(text: &str) -> Result<i64, String> {
    parse_time_at(text, now_ms())
}

fn parse_time_at(text: &str, now: i64) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(age) = humantime::parse_duration(text) {
        let age = i64::try_from(age.as_millis()).map_err(|_| format!("`{text}` is too long"))?;
        return Ok(now.saturating_sub(age));
    }
    let refused = || {
        format!(
            "`{text}` is neither an RFC 3339 time (`2026-11-21T10:00:00Z`) nor a duration \
             back from now (`15m`, `2h`, `7d`)"
        )
    };
    // humantime reads UTC only: take an offset off and apply it here.
    let (local, offset_ms) = split_offset(text).ok_or_else(refused)?;
    let local = if local.len() == "2026-11-21".len() {
        format!("{local}T00:00:00Z")
    } else {
        format!("{local}Z")
    };
    let at = humantime::parse_rfc3339(&local).map_err(|_| refused())?;
    let ms = match at.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).map_err(|_| refused())?,
        Err(before) => -i64::try_from(before.duration().as_millis()).map_err(|_| refused())?,
    };
    Ok(ms.saturating_sub(offset_ms))
}

/// `2026-11-21T10:00:00+02:00` → (`2026-11-21T10:00:00`, 2 h in ms); `…Z` → (`…`, 0);
/// a date alone, or a time without a zone, is UTC. `None` for a malformed offset.
fn split_offset(text: &str) -> Option<(&str, i64)> {
    if let Some(local) = text.strip_suffix(['Z', 'z']) {
        return Some((local, 0));
    }
    // An offset is the last six characters of a date and time: `+02:00`.
    if text.len() <= "2026-11-21T10:00".len() {
        return Some((text, 0));
    }
    let (local, offset) = text.split_at_checked(text.len() - 6)?;
    let (sign, hhmm) = match offset.split_at_checked(1)? {
        ("+", hhmm) => (1, hhmm),
        ("-", hhmm) => (-1, hhmm),
        _ => return Some((text, 0)),
    };
    let (hours, minutes) = hhmm.split_once(':')?;
    let hours: i64 = hours.parse().ok().filter(|h| (0..24).contains(h))?;
    let minutes: i64 = minutes.parse().ok().filter(|m| (0..60).contains(m))?;
    Some((local, sign * (hours * 60 + minutes) * 60_000))
}

/// At most `max` characters of `text`, with `…` when cut.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}…", text.get(..end).unwrap_or(text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_000_000_000;

    #[test]
    fn times_read_as_rfc3339_or_a_duration_back_from_now() {
        assert_eq!(parse_time_at("15m", NOW), Ok(NOW - 900_000));
        assert_eq!(parse_time_at("7d", NOW), Ok(NOW - 7 * 86_400_000));
        assert_eq!(parse_time_at("1970-01-01T00:00:01Z", NOW), Ok(1_000));
        assert_eq!(parse_time_at("1970-01-01T00:00:01.250Z", NOW), Ok(1_250));
        assert_eq!(parse_time_at("1970-01-02", NOW), Ok(86_400_000));
        assert_eq!(
            parse_time_at("1970-01-01T02:00:00+02:00", NOW),
            Ok(0),
            "an offset is applied"
        );
        assert_eq!(
            parse_time_at("1970-01-01T00:00:00-01:30", NOW),
            Ok(5_400_000)
        );
        for bad in ["yesterday", "2026-13-01T00:00:00Z", "10", ""] {
            let err = parse_time_at(bad, NOW).unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn times_print_as_rfc3339_utc_to_the_millisecond() {
        assert_eq!(utc(1_772_366_400_123), "2026-03-01T12:00:00.123Z");
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(-5), "-5 ms since 1970");
        assert_eq!(utc(i64::MAX), format!("{} ms since 1970", i64::MAX));
    }

    #[test]
    fn summaries_are_clipped_on_characters() {
        assert_eq!(clip("héllo", 3), "hél…");
        assert_eq!(clip("héllo", 5), "héllo");
    }
}
