//! A supervised stdio child process: spawned once, restarted with backoff after a crash,
//! its stderr sent to the log, stopped on shutdown.

use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use writ_core::config::StdioTransport;
use writ_core::naming::ServerName;

use super::dispatch::{Dispatcher, Handled, cancelled_params};
use super::{UpstreamError, initialize_params, server_info};
use crate::jsonrpc;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A child that ran this long before dying starts the backoff over.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// How long a child gets to exit after its stdin closes before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(2);
const INITIALIZE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub(super) struct StdioLink {
    shared: Arc<Shared>,
    stopped: Mutex<Option<tokio::task::JoinHandle<()>>>,
    shutdown: CancellationToken,
}

#[derive(Debug)]
struct Shared {
    server: ServerName,
    command: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: Option<std::path::PathBuf>,
    dispatcher: Arc<Dispatcher>,
    writer: RwLock<Option<mpsc::Sender<String>>>,
}

impl StdioLink {
    pub(super) fn start(
        server: ServerName,
        config: &StdioTransport,
        dispatcher: Arc<Dispatcher>,
        shutdown: CancellationToken,
    ) -> Result<Self, UpstreamError> {
        let env = config
            .env
            .iter()
            .map(|(key, value)| {
                Ok((
                    key.clone(),
                    value.resolve().map_err(|e| UpstreamError::Config {
                        server: server.clone(),
                        reason: e.to_string(),
                    })?,
                ))
            })
            .collect::<Result<Vec<_>, UpstreamError>>()?;
        let shared = Arc::new(Shared {
            server,
            command: config.command.clone(),
            args: config.args.clone(),
            env,
            cwd: config.cwd.clone(),
            dispatcher,
            writer: RwLock::new(None),
        });
        let supervisor = tokio::spawn(supervise(shared.clone(), shutdown.clone()));
        if let Some(cancels) = shared.dispatcher.take_cancels() {
            tokio::spawn(forward_cancels(shared.clone(), cancels));
        }
        Ok(Self {
            shared,
            stopped: Mutex::new(Some(supervisor)),
            shutdown,
        })
    }

    pub(super) async fn send(&self, text: String) -> Result<(), UpstreamError> {
        self.shared.send(text)
    }

    pub(super) async fn stop(&self) {
        self.shutdown.cancel();
        let handle = self
            .stopped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = handle.await;
        }
    }
}

impl Shared {
    fn send(&self, text: String) -> Result<(), UpstreamError> {
        let writer = self.writer.read().unwrap_or_else(PoisonError::into_inner);
        match writer.as_ref().map(|w| w.try_send(text)) {
            Some(Ok(())) => Ok(()),
            Some(Err(mpsc::error::TrySendError::Full(_))) => Err(UpstreamError::Unavailable {
                server: self.server.clone(),
                reason: "the process is not reading its input fast enough".into(),
            }),
            _ => Err(UpstreamError::Unavailable {
                server: self.server.clone(),
                reason: "the process is not running".into(),
            }),
        }
    }

    fn set_writer(&self, writer: Option<mpsc::Sender<String>>) {
        *self.writer.write().unwrap_or_else(PoisonError::into_inner) = writer;
    }
}

async fn forward_cancels(shared: Arc<Shared>, mut cancels: mpsc::Receiver<u64>) {
    while let Some(id) = cancels.recv().await {
        let _ = shared.send(jsonrpc::notification_text(
            "notifications/cancelled",
            Some(&cancelled_params(id)),
        ));
    }
}

/// Keeps the child running until shutdown.
async fn supervise(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        let reason = match spawn(&shared) {
            Ok(child) => run(&shared, child, &shutdown).await,
            Err(err) => format!("could not start `{}`: {err}", shared.command),
        };
        shared.dispatcher.went_down();
        shared.set_writer(None);
        shared.dispatcher.fail_all(&reason);
        if shutdown.is_cancelled() {
            tracing::info!(server = %shared.server, "stopped");
            return;
        }
        if started.elapsed() > STABLE_AFTER {
            backoff = FIRST_BACKOFF;
        }
        tracing::warn!(server = %shared.server, %reason, restart_in = ?backoff, "upstream process is down");
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn spawn(shared: &Shared) -> std::io::Result<Child> {
    let mut command = Command::new(&shared.command);
    command
        .args(&shared.args)
        .envs(shared.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(cwd) = &shared.cwd {
        command.current_dir(cwd);
    }
    command.spawn()
}

/// The next line of a child's output, `None` at its end. A line longer than
/// [`super::MAX_UPSTREAM_MESSAGE`] is dropped (logged; a call waiting for it times out)
/// rather than held in memory whole.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    server: &ServerName,
) -> Option<String> {
    let limit = u64::try_from(super::MAX_UPSTREAM_MESSAGE).unwrap_or(u64::MAX);
    read_line_within(reader, server, limit).await
}

async fn read_line_within<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    server: &ServerName,
    limit: u64,
) -> Option<String> {
    use tokio::io::AsyncReadExt as _;
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut *reader)
            .take(limit + 1)
            .read_until(b'\n', &mut line)
            .await
            .ok()?;
        if read == 0 {
            return None;
        }
        if line.len() as u64 <= limit || line.ends_with(b"\n") {
            return Some(
                String::from_utf8_lossy(&line)
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            );
        }
        tracing::warn!(server = %server, "dropping a line longer than {limit} bytes");
        // Skip the rest of the line, a bounded piece at a time.
        loop {
            line.clear();
            let read = (&mut *reader)
                .take(limit)
                .read_until(b'\n', &mut line)
                .await
                .ok()?;
            if read == 0 {
                return None;
            }
            if line.ends_with(b"\n") {
                break;
            }
        }
    }
}

/// Runs one child until it exits or shutdown; returns why it ended.
async fn run(shared: &Arc<Shared>, mut child: Child, shutdown: &CancellationToken) -> String {
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return "the process has no stdio pipes".into();
    };
    let (writer, mut lines) = mpsc::channel::<String>(super::STDIN_BACKLOG);
    shared.set_writer(Some(writer));

    let server = shared.server.clone();
    tokio::spawn(async move {
        let mut stderr = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = stderr.next_line().await {
            tracing::info!(server = %server, "stderr: {line}");
        }
    });
    let write_loop = tokio::spawn(async move {
        while let Some(mut line) = lines.recv().await {
            line.push('\n');
            if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                break;
            }
        }
        // Dropping stdin here closes the pipe: the polite way to ask a stdio server to exit.
    });
    let reader = shared.clone();
    let read_loop = tokio::spawn(async move {
        let mut stdout = BufReader::new(stdout);
        while let Some(line) = read_line(&mut stdout, &reader.server).await {
            if line.trim().is_empty() {
                continue;
            }
            if let Handled::Other { reply: Some(reply) } = reader.dispatcher.handle(&line) {
                let _ = reader.send(reply);
            }
        }
    });
    let init = shared.clone();
    tokio::spawn(async move { initialize(&init).await });

    tokio::select! {
        status = child.wait() => {
            read_loop.abort();
            write_loop.abort();
            match status {
                Ok(status) => format!("the process exited ({status})"),
                Err(err) => format!("the process could not be waited on: {err}"),
            }
        }
        () = shutdown.cancelled() => {
            shared.set_writer(None);
            let _ = tokio::time::timeout(STOP_GRACE, write_loop).await;
            if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
            read_loop.abort();
            "Writ is shutting down".into()
        }
    }
}

async fn initialize(shared: &Arc<Shared>) {
    let (id, mut pending) = shared.dispatcher.register(Some(initialize_params()), None);
    let text = jsonrpc::request_text(id, "initialize", pending.params().as_deref());
    if shared.send(text).is_err() {
        return;
    }
    let result = match tokio::time::timeout(INITIALIZE_TIMEOUT, pending.outcome()).await {
        Ok(Ok(result)) => result,
        Ok(Err(err)) => return tracing::warn!(server = %shared.server, %err, "initialize failed"),
        Err(_) => return tracing::warn!(server = %shared.server, "initialize timed out"),
    };
    match server_info(&shared.server, &result) {
        Ok(info) => {
            let _ = shared.send(jsonrpc::notification_text(
                "notifications/initialized",
                None,
            ));
            shared.dispatcher.became_ready(info);
        }
        Err(err) => tracing::warn!(server = %shared.server, %err, "initialize refused"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_line_past_the_limit_is_dropped_and_the_next_one_read() {
        let server = ServerName::parse("py").unwrap();
        let input: &[u8] = b"{\"a\":1}\r\n0123456789abcdefghij0123456789\n{\"b\":2}\nlast";
        let mut reader = BufReader::new(input);
        let mut lines = Vec::new();
        while let Some(line) = read_line_within(&mut reader, &server, 12).await {
            lines.push(line);
        }
        assert_eq!(lines, ["{\"a\":1}", "{\"b\":2}", "last"]);
    }
}
