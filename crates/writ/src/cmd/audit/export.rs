//! `writ audit export`: the log, oldest first, as JSON lines or as OTLP/JSON logs (to a
//! file, or POSTed to an OTLP/HTTP collector).
//!
//! OTLP follows the protobuf JSON mapping of `ExportLogsServiceRequest`
//! (opentelemetry-proto `docs/specification.md`, "JSON Protobuf Encoding"): lowerCamelCase
//! keys, 64-bit integers as decimal strings, enums as integers.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use writ_audit::{Record, canonical_json, kinds};
use writ_store::{AuditFilter, Store};

use super::{PAGE, call_of};

/// Progress goes to stderr after every this many records.
const PROGRESS_EVERY: u64 = 10_000;

/// How long a collector gets to answer one batch.
const POST_TIMEOUT: Duration = Duration::from_secs(30);

/// The instrumentation scope records are exported under.
const SCOPE: &str = "writ.audit";

/// OTLP `SeverityNumber`s.
const SEVERITY_INFO: u8 = 9;
const SEVERITY_WARN: u8 = 13;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(super) enum Format {
    Jsonl,
    Otlp,
}

pub(super) async fn export(
    store: &dyn Store,
    mut filter: AuditFilter,
    format: Format,
    file: Option<&Path>,
    endpoint: Option<&str>,
    stdout: &mut impl Write,
) -> anyhow::Result<()> {
    let collector = match (endpoint, format) {
        (None, _) => None,
        (Some(url), Format::Otlp) => Some(Collector::new(url)?),
        (Some(_), Format::Jsonl) => bail!("`--endpoint` sends OTLP: use `--format otlp`"),
    };
    let mut sink: Box<dyn Write> = match file {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("could not create `{}`", path.display()))?,
        )),
        None => Box::new(&mut *stdout),
    };
    filter.limit = PAGE;
    filter.newest_first = false;
    let mut exported = 0u64;
    loop {
        let page = store.audit_query(&filter).await?;
        let Some(last) = page.last() else { break };
        filter.after = Some(last.position);
        let records: Vec<&Record> = page.iter().map(|entry| &entry.record).collect();
        match (format, &collector) {
            (Format::Jsonl, _) => {
                for record in &records {
                    writeln!(sink, "{}", serde_json::to_string(record)?)?;
                }
            }
            (Format::Otlp, None) => writeln!(sink, "{}", request(&records))?,
            (Format::Otlp, Some(collector)) => collector.send(&records, exported).await?,
        }
        let before = exported;
        exported += records.len() as u64;
        if exported / PROGRESS_EVERY > before / PROGRESS_EVERY {
            eprintln!("exported {exported} records…");
        }
        if page.len() < PAGE as usize {
            break;
        }
    }
    sink.flush()?;
    let to = match (file, &collector) {
        (Some(path), _) => format!(" to `{}`", path.display()),
        (None, Some(collector)) => format!(" to {}", collector.url),
        (None, None) => String::new(),
    };
    eprintln!("exported {exported} records{to}");
    Ok(())
}

/// One `ExportLogsServiceRequest` holding `records`.
fn request(records: &[&Record]) -> Value {
    json!({
        "resourceLogs": [{
            "resource": {
                "attributes": [
                    string("service.name", "writ"),
                    string("service.version", env!("CARGO_PKG_VERSION")),
                ],
            },
            "scopeLogs": [{
                "scope": { "name": SCOPE, "version": env!("CARGO_PKG_VERSION") },
                "logRecords": records.iter().map(|r| log_record(r)).collect::<Vec<_>>(),
            }],
        }],
    })
}

/// A record as an OTLP `LogRecord`: its kind as the body and event name, every member
/// as a `writ.audit.*` attribute. No trace context: a record is not part of a trace.
fn log_record(record: &Record) -> Value {
    // fixed64 nanoseconds, as a decimal string; 0 means unknown (a time before 1970).
    let nanos = u64::try_from(record.time_ms)
        .ok()
        .and_then(|ms| ms.checked_mul(1_000_000))
        .unwrap_or(0)
        .to_string();
    let mut attributes = vec![
        string("writ.audit.writer", &record.writer),
        json!({ "key": "writ.audit.seq", "value": { "intValue": record.seq.to_string() } }),
        string("writ.audit.kind", &record.kind),
        json!({
            "key": "writ.audit.actor",
            "value": { "arrayValue": {
                "values": record.actor.iter().map(|a| json!({ "stringValue": a })).collect::<Vec<_>>(),
            } },
        }),
    ];
    for (key, value) in [
        ("writ.audit.task", record.task.as_deref()),
        ("writ.audit.tool", record.tool.as_deref()),
        ("writ.audit.decision", record.decision.as_deref()),
        ("writ.audit.call", call_of(record)),
    ] {
        if let Some(value) = value {
            attributes.push(string(key, value));
        }
    }
    attributes.push(string("writ.audit.hash", &record.hash));
    attributes.push(string("writ.audit.prev_hash", &record.prev_hash));
    attributes.push(string(
        "writ.audit.fields",
        &String::from_utf8_lossy(&canonical_json(&Value::Object(record.fields.clone()))),
    ));
    let (severity, severity_text) = if is_warning(record) {
        (SEVERITY_WARN, "WARN")
    } else {
        (SEVERITY_INFO, "INFO")
    };
    json!({
        "timeUnixNano": nanos,
        "observedTimeUnixNano": nanos,
        "severityNumber": severity,
        "severityText": severity_text,
        "eventName": record.kind,
        "body": { "stringValue": record.kind },
        "attributes": attributes,
    })
}

/// Records an operator should notice: refusals, deviations, failed sign-ins, revoked
/// tasks, tools that changed.
fn is_warning(record: &Record) -> bool {
    matches!(
        record.kind.as_str(),
        kinds::CALL_DEVIATION | kinds::AUTH_FAILED | kinds::TASK_REVOKED | kinds::TOOL_DRIFTED
    ) || record.decision.as_deref() == Some("deny")
}

fn string(key: &str, value: &str) -> Value {
    json!({ "key": key, "value": { "stringValue": value } })
}

/// An OTLP/HTTP collector's logs endpoint.
#[derive(Debug)]
struct Collector {
    client: reqwest::Client,
    url: String,
}

impl Collector {
    fn new(endpoint: &str) -> anyhow::Result<Self> {
        let base = endpoint.trim_end_matches('/');
        if !base.starts_with("http://") && !base.starts_with("https://") {
            bail!("`--endpoint` must be an http:// or https:// URL, not `{endpoint}`");
        }
        let url = if base.ends_with("/v1/logs") {
            base.to_owned()
        } else {
            format!("{base}/v1/logs")
        };
        let client = reqwest::Client::builder()
            .timeout(POST_TIMEOUT)
            .build()
            .context("could not set up an HTTP client")?;
        Ok(Self { client, url })
    }

    /// POSTs one batch; `sent` records went before it.
    async fn send(&self, records: &[&Record], sent: u64) -> anyhow::Result<()> {
        let body = serde_json::to_vec(&request(records))?;
        let failed = |why: String| {
            anyhow::anyhow!(
                "the collector at `{}` did not take the export ({sent} records were sent \
                 before this batch of {}): {why}",
                self.url,
                records.len()
            )
        };
        let response = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|err| failed(format!("could not reach it: {err}")))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(failed(format!(
                "HTTP {status}: {}",
                super::clip(text.trim(), 300)
            )));
        }
        // A partial success names how many records the collector dropped.
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let partial = answer.get("partialSuccess");
        let rejected = match partial.and_then(|p| p.get("rejectedLogRecords")) {
            Some(Value::String(n)) => n.parse().unwrap_or(0),
            Some(n) => n.as_u64().unwrap_or(0),
            None => 0,
        };
        if rejected > 0 {
            let why = partial
                .and_then(|p| p.get("errorMessage"))
                .and_then(Value::as_str)
                .unwrap_or("no reason given");
            return Err(failed(format!("it rejected {rejected} records: {why}")));
        }
        Ok(())
    }
}
