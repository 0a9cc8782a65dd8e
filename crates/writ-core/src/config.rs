//! `writ.toml`, parsed once into typed configuration.
//!
//! The raw layer mirrors the file and refuses unknown keys; the typed layer is what the
//! rest of Writ sees, and cannot hold an invalid state. Every error names the key and the
//! line it stands on.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::naming::ServerName;

mod access;
mod audit;
mod policy;
pub use access::{
    AdminConfig, DpopMode, IdentityConfig, OidcIssuer, SigningAlgorithm, SpiffeTrust, StoreConfig,
    TokenConfig,
};
pub use audit::AuditConfig;
pub use policy::{OnDeviation, PolicyConfig, PolicyMode, TaskRules};

use crate::tools::ToolRule;

/// Default limit on a request body (MCP messages are small; 4 MiB leaves room for big arguments).
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Default limit on JSON nesting in a request body.
pub const DEFAULT_MAX_JSON_DEPTH: usize = 64;
const DEFAULT_LISTEN: &str = "127.0.0.1:7800";
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const DEFAULT_PAGE_SIZE: usize = 100;
/// Sessions held at once; each costs little, but without a cap `initialize` floods memory.
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;

/// Header names whose values are credentials: they must come from a reference, never
/// stand in the file as plain text.
const SENSITIVE_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "api-key",
    "x-auth-token",
];

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub servers: Vec<ServerConfig>,
    pub store: StoreConfig,
    pub identity: IdentityConfig,
    pub tokens: TokenConfig,
    pub policy: PolicyConfig,
    pub tasks: TaskRules,
    pub admin: AdminConfig,
    pub audit: AuditConfig,
    /// Lowercase hex SHA-256 of the configuration's text, for the audit log's
    /// `config.loaded` record.
    pub digest: String,
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where the gateway listens.
    pub listen: SocketAddr,
    /// The URL agents use to reach the gateway, when it differs from `listen` (behind a proxy).
    pub public_url: Option<String>,
    /// Origins allowed to call `/mcp` from a browser, besides the gateway's own.
    pub allowed_origins: Vec<String>,
    pub max_body_bytes: usize,
    pub max_json_depth: usize,
    /// How long one upstream call may take before the agent gets a timeout error.
    pub call_timeout: Duration,
    /// A session unused for this long is forgotten; its id then answers 404.
    pub session_idle_timeout: Duration,
    pub tool_names: ToolNames,
    /// How many items one page of a merged list holds.
    pub page_size: usize,
    /// How many agent sessions may be open at once; `initialize` beyond it gets 503.
    pub max_sessions: usize,
    /// Whether `/mcp` demands a writ. Off is for local development only.
    pub auth: AuthMode,
}

/// Whether agents must present a writ on `/mcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Every request carries a valid writ for an active task (the default).
    On,
    /// Anyone who reaches the listen address may call every tool. Local development only.
    Off,
}

/// How tool, prompt and resource names are exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolNames {
    /// `server.tool`, the default and the only choice with more than one server.
    Namespaced,
    /// The upstream's own names; allowed only with exactly one server.
    Bare,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub name: ServerName,
    pub transport: Transport,
    pub call_timeout: Duration,
    /// Whether the server's MCP tool annotations may classify its tools.
    pub trusted: bool,
    /// Whether tool definitions are pinned on first sight and drift is held back.
    pub pinning: bool,
    /// What the operator says about the server's tools (`[[servers.tools]]`).
    pub tools: Vec<ToolRule>,
    /// What the operator says about the server's prompts (`[[servers.prompts]]`).
    pub prompts: Vec<crate::tools::PromptRule>,
    /// What the operator says about the server's resources (`[[servers.resources]]`).
    pub resources: Vec<crate::tools::ResourceRule>,
}

#[derive(Debug, Clone)]
pub enum Transport {
    Http(HttpTransport),
    Stdio(StdioTransport),
}

#[derive(Debug, Clone)]
pub struct HttpTransport {
    pub url: String,
    pub headers: Vec<(String, ValueSource)>,
}

#[derive(Debug, Clone)]
pub struct StdioTransport {
    pub command: String,
    pub args: Vec<String>,
    pub env: Vec<(String, ValueSource)>,
    pub cwd: Option<PathBuf>,
}

/// A value given in the file, or a reference to where the value lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSource {
    Literal(String),
    /// The value of this environment variable of the gateway process.
    Env(String),
}

impl ValueSource {
    /// The value itself; a missing environment variable is an error naming it.
    pub fn resolve(&self) -> Result<String, ConfigError> {
        match self {
            Self::Literal(value) => Ok(value.clone()),
            Self::Env(var) => std::env::var(var).map_err(|_| ConfigError {
                line: None,
                message: format!("environment variable `{var}` is not set"),
            }),
        }
    }
}

/// A configuration error, with the line it was found on when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct ConfigError {
    pub line: Option<usize>,
    pub message: String,
}

impl Config {
    /// Parses the text of a `writ.toml`.
    pub fn parse(source: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(source).map_err(|err| ConfigError {
            line: err.span().map(|span| line_of(source, span.start)),
            message: err.message().to_owned(),
        })?;
        raw.into_config(source)
    }
}

fn line_of(source: &str, offset: usize) -> usize {
    source
        .get(..offset)
        .map_or(1, |before| before.matches('\n').count() + 1)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    gateway: RawGateway,
    #[serde(default)]
    servers: Vec<RawServer>,
    #[serde(default)]
    store: access::RawStore,
    #[serde(default)]
    identity: access::RawIdentity,
    #[serde(default)]
    tokens: access::RawTokens,
    #[serde(default)]
    policy: policy::RawPolicy,
    #[serde(default)]
    tasks: policy::RawTasks,
    #[serde(default)]
    admin: access::RawAdmin,
    #[serde(default)]
    audit: audit::RawAudit,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    listen: Option<Spanned<String>>,
    public_url: Option<Spanned<String>>,
    #[serde(default)]
    allowed_origins: Vec<String>,
    max_body_bytes: Option<Spanned<usize>>,
    max_json_depth: Option<Spanned<usize>>,
    call_timeout: Option<Spanned<String>>,
    session_idle_timeout: Option<Spanned<String>>,
    tool_names: Option<Spanned<ToolNames>>,
    page_size: Option<Spanned<usize>>,
    max_sessions: Option<Spanned<usize>>,
    auth: Option<AuthMode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    name: Spanned<String>,
    transport: Spanned<RawTransportKind>,
    url: Option<Spanned<String>>,
    headers: Option<Spanned<BTreeMap<String, RawValueSource>>>,
    #[serde(default)]
    allow_insecure_upstream_http: bool,
    command: Option<Spanned<String>>,
    args: Option<Spanned<Vec<String>>>,
    env: Option<Spanned<BTreeMap<String, RawValueSource>>>,
    cwd: Option<Spanned<String>>,
    call_timeout: Option<Spanned<String>>,
    #[serde(default)]
    trusted: bool,
    pinning: Option<Pinning>,
    #[serde(default)]
    tools: Vec<policy::RawToolRule>,
    #[serde(default)]
    prompts: Vec<policy::RawPromptRule>,
    #[serde(default)]
    resources: Vec<policy::RawResourceRule>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Pinning {
    On,
    Off,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum RawTransportKind {
    Http,
    Stdio,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawValueSource {
    Literal(String),
    Reference(RawReference),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReference {
    env: String,
}

impl From<RawValueSource> for ValueSource {
    fn from(raw: RawValueSource) -> Self {
        match raw {
            RawValueSource::Literal(value) => Self::Literal(value),
            RawValueSource::Reference(reference) => Self::Env(reference.env),
        }
    }
}

/// Builds errors that point at the line of a spanned value.
/// Lowercase hex SHA-256.
fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

struct At<'s>(&'s str);

impl At<'_> {
    fn error<T>(&self, spanned: &Spanned<T>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            line: Some(line_of(self.0, spanned.span().start)),
            message: message.into(),
        }
    }

    fn duration(
        &self,
        key: &str,
        value: Option<&Spanned<String>>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        match humantime::parse_duration(value.get_ref()) {
            Ok(duration) if !duration.is_zero() => Ok(duration),
            Ok(_) => Err(self.error(value, format!("`{key}` must be longer than zero"))),
            Err(_) => Err(self.error(
                value,
                format!(
                    "`{key}` = `{}` is not a duration; write it like \"30s\" or \"5m\"",
                    value.get_ref()
                ),
            )),
        }
    }

    fn positive(
        &self,
        key: &str,
        value: Option<&Spanned<usize>>,
        default: usize,
    ) -> Result<usize, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) if *v.get_ref() > 0 => Ok(*v.get_ref()),
            Some(v) => Err(self.error(v, format!("`{key}` must be greater than zero"))),
        }
    }
}

impl RawConfig {
    fn into_config(self, source: &str) -> Result<Config, ConfigError> {
        let at = At(source);
        let gateway = self.gateway.into_config(&at)?;
        let mut servers: Vec<ServerConfig> = Vec::with_capacity(self.servers.len());
        for raw in self.servers {
            let server = raw.into_config(&at, gateway.call_timeout)?;
            if servers.iter().any(|s| s.name == server.name) {
                return Err(ConfigError {
                    line: None,
                    message: format!(
                        "two servers are named `{}`; server names must be unique",
                        server.name
                    ),
                });
            }
            servers.push(server);
        }
        if gateway.tool_names == ToolNames::Bare && servers.len() > 1 {
            return Err(ConfigError {
                line: None,
                message: "`gateway.tool_names = \"bare\"` needs exactly one server; with several, names must be namespaced".into(),
            });
        }
        Ok(Config {
            gateway,
            servers,
            store: self.store.into_config(),
            identity: self.identity.into_config(&at)?,
            tokens: self.tokens.into_config(&at)?,
            policy: self.policy.into_config(&at)?,
            tasks: self.tasks.into_config(),
            admin: self.admin.into_config(&at)?,
            audit: self.audit.into_config(&at)?,
            digest: hex_sha256(source.as_bytes()),
        })
    }
}

impl RawGateway {
    fn into_config(self, at: &At<'_>) -> Result<GatewayConfig, ConfigError> {
        let listen = match &self.listen {
            None => DEFAULT_LISTEN.parse().map_err(|_| ConfigError {
                line: None,
                message: "bad default listen address".into(),
            })?,
            Some(value) => value.get_ref().parse().map_err(|_| {
                at.error(
                    value,
                    format!(
                        "`listen` = `{}` is not an address like \"127.0.0.1:7800\"",
                        value.get_ref()
                    ),
                )
            })?,
        };
        let public_url = match self.public_url {
            None => None,
            Some(url) if is_http_url(url.get_ref()) => {
                Some(url.into_inner().trim_end_matches('/').to_owned())
            }
            Some(url) => {
                return Err(at.error(
                    &url,
                    format!(
                        "`public_url` = `{}` must be an http:// or https:// URL",
                        url.get_ref()
                    ),
                ));
            }
        };
        Ok(GatewayConfig {
            listen,
            public_url,
            allowed_origins: self.allowed_origins,
            max_body_bytes: at.positive(
                "max_body_bytes",
                self.max_body_bytes.as_ref(),
                DEFAULT_MAX_BODY_BYTES,
            )?,
            max_json_depth: at.positive(
                "max_json_depth",
                self.max_json_depth.as_ref(),
                DEFAULT_MAX_JSON_DEPTH,
            )?,
            call_timeout: at.duration(
                "call_timeout",
                self.call_timeout.as_ref(),
                DEFAULT_CALL_TIMEOUT,
            )?,
            session_idle_timeout: at.duration(
                "session_idle_timeout",
                self.session_idle_timeout.as_ref(),
                DEFAULT_SESSION_IDLE_TIMEOUT,
            )?,
            tool_names: self
                .tool_names
                .map_or(ToolNames::Namespaced, Spanned::into_inner),
            page_size: at.positive("page_size", self.page_size.as_ref(), DEFAULT_PAGE_SIZE)?,
            max_sessions: at.positive(
                "max_sessions",
                self.max_sessions.as_ref(),
                DEFAULT_MAX_SESSIONS,
            )?,
            auth: self.auth.unwrap_or(AuthMode::On),
        })
    }
}

impl RawServer {
    fn into_config(
        self,
        at: &At<'_>,
        default_timeout: Duration,
    ) -> Result<ServerConfig, ConfigError> {
        let name = ServerName::parse(self.name.get_ref())
            .map_err(|err| at.error(&self.name, err.to_string()))?;
        let call_timeout =
            at.duration("call_timeout", self.call_timeout.as_ref(), default_timeout)?;
        let kind = *self.transport.get_ref();
        let misplaced = |key: &str, present: Option<std::ops::Range<usize>>| match present {
            Some(span) => Err(ConfigError {
                line: Some(line_of(at.0, span.start)),
                message: format!(
                    "server `{name}`: `{key}` does not apply to transport \"{}\"",
                    if kind == RawTransportKind::Http {
                        "http"
                    } else {
                        "stdio"
                    }
                ),
            }),
            None => Ok(()),
        };
        let transport = match kind {
            RawTransportKind::Http => {
                misplaced("command", self.command.as_ref().map(Spanned::span))?;
                misplaced("args", self.args.as_ref().map(Spanned::span))?;
                misplaced("env", self.env.as_ref().map(Spanned::span))?;
                misplaced("cwd", self.cwd.as_ref().map(Spanned::span))?;
                let url = self.url.ok_or_else(|| {
                    at.error(
                        &self.transport,
                        format!("server `{name}`: transport \"http\" needs `url`"),
                    )
                })?;
                check_upstream_url(at, &name, &url, self.allow_insecure_upstream_http)?;
                let headers = match self.headers {
                    None => Vec::new(),
                    Some(headers) => {
                        let line_span = headers.span();
                        let mut out = Vec::new();
                        for (key, value) in headers.into_inner() {
                            let value = ValueSource::from(value);
                            if matches!(value, ValueSource::Literal(_))
                                && SENSITIVE_HEADERS.contains(&key.to_ascii_lowercase().as_str())
                            {
                                return Err(ConfigError {
                                    line: Some(line_of(at.0, line_span.start)),
                                    message: format!(
                                        "server `{name}`: header `{key}` carries a credential; write it as {{ env = \"VAR\" }} instead of a value in the file"
                                    ),
                                });
                            }
                            out.push((key, value));
                        }
                        out
                    }
                };
                Transport::Http(HttpTransport {
                    url: url.into_inner(),
                    headers,
                })
            }
            RawTransportKind::Stdio => {
                misplaced("url", self.url.as_ref().map(Spanned::span))?;
                misplaced("headers", self.headers.as_ref().map(Spanned::span))?;
                let command = self.command.ok_or_else(|| {
                    at.error(
                        &self.transport,
                        format!("server `{name}`: transport \"stdio\" needs `command`"),
                    )
                })?;
                if command.get_ref().trim().is_empty() {
                    return Err(at.error(&command, format!("server `{name}`: `command` is empty")));
                }
                Transport::Stdio(StdioTransport {
                    command: command.into_inner(),
                    args: self.args.map(Spanned::into_inner).unwrap_or_default(),
                    env: self
                        .env
                        .map(Spanned::into_inner)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(key, value)| (key, value.into()))
                        .collect(),
                    cwd: self.cwd.map(|cwd| PathBuf::from(cwd.into_inner())),
                })
            }
        };
        let mut tools: Vec<ToolRule> = Vec::with_capacity(self.tools.len());
        for raw in self.tools {
            let rule = raw.into_rule(at, name.as_str())?;
            if tools.iter().any(|t| t.name == rule.name) {
                return Err(ConfigError {
                    line: None,
                    message: format!(
                        "server `{name}`: two `[[servers.tools]]` entries are named `{}`",
                        rule.name
                    ),
                });
            }
            tools.push(rule);
        }
        let prompts = self
            .prompts
            .into_iter()
            .map(|raw| raw.into_rule(at, name.as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        let resources = self
            .resources
            .into_iter()
            .map(|raw| raw.into_rule(at, name.as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ServerConfig {
            name,
            transport,
            call_timeout,
            trusted: self.trusted,
            pinning: self.pinning != Some(Pinning::Off),
            tools,
            prompts,
            resources,
        })
    }
}

fn is_http_url(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

/// The host of an `http://` URL, given what follows the scheme.
fn http_host(rest: &str) -> &str {
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    if host.starts_with('[') {
        host.split_once(']')
            .map_or(host, |(h, _)| h)
            .trim_start_matches('[')
    } else {
        host.split(':').next().unwrap_or_default()
    }
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `Some(true)` for a plain `http://` URL to this machine, `Some(false)` for plain http
/// elsewhere, `None` for anything that is not plain http.
fn http_loopback(url: &str) -> Option<bool> {
    let rest = url.strip_prefix("http://")?;
    let host = http_host(rest);
    Some(!host.is_empty() && is_loopback_host(host))
}

/// Plain HTTP to anything but this machine is refused unless the operator names the risk.
fn check_upstream_url(
    at: &At<'_>,
    name: &ServerName,
    url: &Spanned<String>,
    allow_insecure: bool,
) -> Result<(), ConfigError> {
    let text = url.get_ref();
    if let Some(rest) = text.strip_prefix("http://") {
        let host = http_host(rest);
        let loopback = is_loopback_host(host);
        if host.is_empty() {
            return Err(at.error(
                url,
                format!("server `{name}`: `url` = `{text}` has no host"),
            ));
        }
        if !loopback && !allow_insecure {
            return Err(at.error(
                url,
                format!("server `{name}`: plain http:// to `{host}` would expose calls on the network; use https:// or set `allow_insecure_upstream_http = true`"),
            ));
        }
        Ok(())
    } else if text.starts_with("https://") && text.len() > "https://".len() {
        Ok(())
    } else {
        Err(at.error(
            url,
            format!("server `{name}`: `url` = `{text}` must be an http:// or https:// URL"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses_into_typed_config() {
        let config = Config::parse(
            r#"
[gateway]
listen = "127.0.0.1:9000"
public_url = "https://writ.example.com/"
call_timeout = "5s"

[[servers]]
name = "notes"
transport = "http"
url = "http://127.0.0.1:9100/mcp"
headers = { Authorization = { env = "NOTES_TOKEN" }, X-Team = "ops" }

[[servers]]
name = "everything"
transport = "stdio"
command = "node"
args = ["server.js", "stdio"]
env = { LOG = "debug" }
call_timeout = "90s"
"#,
        )
        .unwrap();
        assert_eq!(config.gateway.listen.port(), 9000);
        assert_eq!(
            config.gateway.public_url.as_deref(),
            Some("https://writ.example.com")
        );
        assert_eq!(config.gateway.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(config.gateway.max_sessions, DEFAULT_MAX_SESSIONS);
        assert_eq!(config.servers.len(), 2);
        assert_eq!(config.servers[0].call_timeout, Duration::from_secs(5));
        assert_eq!(config.servers[1].call_timeout, Duration::from_secs(90));
        let Transport::Http(http) = &config.servers[0].transport else {
            panic!("http")
        };
        assert_eq!(
            http.headers[0],
            (
                "Authorization".into(),
                ValueSource::Env("NOTES_TOKEN".into())
            )
        );
        let Transport::Stdio(stdio) = &config.servers[1].transport else {
            panic!("stdio")
        };
        assert_eq!(stdio.args, ["server.js", "stdio"]);
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let err = Config::parse("[gateway]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap_err();
        assert_eq!(err.line, Some(3));
        assert!(err.message.contains("unknown field `lisen`"), "{err}");
    }

    #[test]
    fn a_bad_value_is_named_with_its_line() {
        let err = Config::parse("[gateway]\n\ncall_timeout = \"soon\"\n").unwrap_err();
        assert_eq!(err.line, Some(3));
        assert!(
            err.to_string()
                .contains("`call_timeout` = `soon` is not a duration"),
            "{err}"
        );

        let err = Config::parse("[gateway]\nlisten = \"nowhere\"\n").unwrap_err();
        assert_eq!(err.line, Some(2));
    }

    #[test]
    fn keys_of_the_other_transport_are_refused() {
        let err = Config::parse("[[servers]]\nname = \"a\"\ntransport = \"http\"\nurl = \"http://127.0.0.1:1/mcp\"\ncommand = \"x\"\n")
            .unwrap_err();
        assert_eq!(err.line, Some(5));
        assert!(err.message.contains("`command` does not apply"), "{err}");
    }

    #[test]
    fn credentials_in_headers_must_be_references() {
        let err = Config::parse(
            "[[servers]]\nname = \"a\"\ntransport = \"http\"\nurl = \"https://x.example/mcp\"\nheaders = { Authorization = \"Bearer abc\" }\n",
        )
        .unwrap_err();
        assert!(err.message.contains("carries a credential"), "{err}");
    }

    #[test]
    fn plain_http_off_this_machine_needs_an_explicit_opt_in() {
        let base =
            "[[servers]]\nname = \"a\"\ntransport = \"http\"\nurl = \"http://10.0.0.5/mcp\"\n";
        assert!(
            Config::parse(base)
                .unwrap_err()
                .message
                .contains("allow_insecure_upstream_http")
        );
        assert!(Config::parse(&format!("{base}allow_insecure_upstream_http = true\n")).is_ok());
        assert!(
            Config::parse(
                "[[servers]]\nname = \"a\"\ntransport = \"http\"\nurl = \"http://[::1]:8/mcp\"\n"
            )
            .is_ok()
        );
    }

    #[test]
    fn duplicate_servers_and_bare_names_with_several_servers_are_refused() {
        let two = "[[servers]]\nname = \"a\"\ntransport = \"stdio\"\ncommand = \"x\"\n[[servers]]\nname = \"b\"\ntransport = \"stdio\"\ncommand = \"y\"\n";
        assert!(
            Config::parse(&format!("[gateway]\ntool_names = \"bare\"\n{two}"))
                .unwrap_err()
                .message
                .contains("exactly one server")
        );
        let dup = two.replace("\"b\"", "\"a\"");
        assert!(Config::parse(&dup).unwrap_err().message.contains("unique"));
    }

    #[test]
    fn an_invalid_server_name_is_refused_with_its_line() {
        let err = Config::parse(
            "\n[[servers]]\nname = \"My.Server\"\ntransport = \"stdio\"\ncommand = \"x\"\n",
        )
        .unwrap_err();
        assert_eq!(err.line, Some(3));
    }

    #[test]
    fn the_access_sections_parse_with_safe_defaults() {
        let config = Config::parse("").unwrap();
        assert_eq!(
            config.gateway.auth,
            AuthMode::On,
            "authentication is on by default"
        );
        assert!(config.identity.require_registered);
        assert_eq!(config.tokens.ttl, Duration::from_secs(300));
        assert_eq!(config.tokens.max_ttl, Duration::from_secs(1800));
        assert_eq!(config.tokens.algorithm, SigningAlgorithm::EdDSA);
        assert_eq!(config.tokens.dpop, DpopMode::Optional);
        assert_eq!(config.tokens.max_delegation_depth, 2);
        assert_eq!(config.tasks.on_deviation, OnDeviation::Revoke);
        assert_eq!(config.policy.mode, PolicyMode::Enforce);
        assert_eq!(config.policy.environment, "prod");
        assert_eq!(config.policy.dir, PathBuf::from("policies"));
        let config = Config::parse(
            r#"
[gateway]
auth = "off"
[store]
path = "/var/lib/writ/writ.db"
[identity]
require_registered = false
[[identity.oidc]]
issuer = "https://login.example.com"
jwks_url = "https://login.example.com/keys"
audience = "writ"
[[identity.spiffe]]
trust_domain = "example.org"
bundle = "/etc/spiffe/bundle.json"
[tokens]
algorithm = "ES256"
ttl = "2m"
max_ttl = "10m"
dpop = "required"
dpop_nonce = true
max_delegation_depth = 3
[policy]
dir = "/etc/writ/policies"
mode = "shadow"
environment = "staging"
[tasks]
on_deviation = "deny"
[admin]
token = { env = "WRIT_ADMIN_TOKEN" }
"#,
        )
        .unwrap();
        assert_eq!(config.gateway.auth, AuthMode::Off);
        assert_eq!(config.identity.oidc[0].agent_claim, "sub");
        assert_eq!(config.identity.spiffe[0].trust_domain, "example.org");
        assert_eq!(config.tokens.dpop, DpopMode::Required);
        assert_eq!(config.policy.mode, PolicyMode::Shadow);
        assert_eq!(config.policy.environment, "staging");
        assert_eq!(config.tasks.on_deviation, OnDeviation::Deny);
        assert_eq!(
            config.admin.token,
            Some(ValueSource::Env("WRIT_ADMIN_TOKEN".into()))
        );
    }

    #[test]
    fn audit_settings_default_safely_and_are_checked() {
        let defaults = Config::parse("").unwrap();
        assert_eq!(defaults.audit, AuditConfig::default());
        assert_eq!(
            defaults.audit.retain, None,
            "nothing is pruned unless asked"
        );
        let config = Config::parse(
            "[audit]\nredact = [\"password\", \"items.*.token\"]\nretain = \"90d\"\ncheckpoint_every = 50\ncheckpoint_interval = \"2s\"\n",
        )
        .unwrap();
        assert_eq!(config.audit.redact, ["password", "items.*.token"]);
        assert_eq!(config.audit.retain, Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(config.audit.checkpoint_every, 50);
        assert_eq!(config.audit.checkpoint_interval, Duration::from_secs(2));
        for (text, says) in [
            (
                "[audit]\nredact = [\"a..b\"]\n",
                "line 2: `audit.redact` pattern `a..b` is not a path",
            ),
            (
                "[audit]\nretain = \"forever\"\n",
                "line 2: `audit.retain` = `forever` is not a duration",
            ),
            (
                "[audit]\ncheckpoint_every = 0\n",
                "line 2: `audit.checkpoint_every` must be greater than zero",
            ),
            ("[audit]\nsync = \"full\"\n", "unknown field `sync`"),
        ] {
            let error = Config::parse(text).unwrap_err().to_string();
            assert!(error.contains(says), "{text}: {error}");
        }
        assert_ne!(
            Config::parse("").unwrap().digest,
            Config::parse("\n").unwrap().digest,
            "the digest is over the text as written"
        );
    }

    #[test]
    fn unsafe_or_inconsistent_access_settings_are_refused() {
        for (text, says) in [
            ("[tokens]\nttl = \"1h\"\n", "longer than `tokens.max_ttl`"),
            ("[tokens]\nmax_delegation_depth = 9\n", "at most 8"),
            (
                "[admin]\ntoken = \"hunter2\"\n",
                "`admin.token` is a credential",
            ),
            (
                "[[identity.oidc]]\nissuer = \"http://login.example.com\"\njwks_url = \"https://x/keys\"\naudience = \"w\"\n",
                "must be an https:// URL",
            ),
            (
                "[[identity.spiffe]]\ntrust_domain = \"spiffe://Example.org\"\nbundle = \"b\"\n",
                "SPIFFE trust domain",
            ),
            (
                "[[tasks.allow]]\nagents = [\"a\"]\n",
                "unknown field `allow`",
            ),
            ("[policy]\nmode = \"audit\"\n", "line 2"),
            ("[policy]\nenvironment = \"Prod!\"\n", "line 2"),
            ("[tasks]\non_deviation = \"ignore\"\n", "line 2"),
            ("[tokens]\ndpop = \"sometimes\"\n", "line 2"),
        ] {
            let error = Config::parse(text).unwrap_err().to_string();
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn servers_carry_trust_pinning_and_tool_facts() {
        let config = Config::parse(
            r#"
[[servers]]
name = "vault"
transport = "stdio"
command = "vault-mcp"
trusted = true
pinning = "off"
[[servers.tools]]
name = "get_*"
access = "read"
risk = "critical"
data_classes = ["secret"]
groups = ["secrets"]
[[servers.tools]]
name = "list"
access = "read"
"#,
        )
        .unwrap();
        let vault = &config.servers[0];
        assert!(vault.trusted);
        assert!(!vault.pinning);
        assert_eq!(vault.tools.len(), 2);
        assert_eq!(vault.tools[0].risk, Some(crate::tools::Risk::Critical));
        assert_eq!(vault.tools[0].groups, Some(vec!["secrets".to_owned()]));
        assert_eq!(vault.tools[1].risk, None);
        let plain =
            Config::parse("[[servers]]\nname = \"a\"\ntransport = \"stdio\"\ncommand = \"x\"\n")
                .unwrap();
        assert!(
            !plain.servers[0].trusted,
            "servers are untrusted by default"
        );
        assert!(plain.servers[0].pinning, "pinning is on by default");
        for (tools, says) in [
            (
                "name = \"x\"\naccess = \"delete\"",
                "line 7: unknown variant `delete`",
            ),
            (
                "name = \"x\"\ngroups = [\"Bad Group\"]",
                "tool group `Bad Group`",
            ),
            ("name = \"x\"\ncolour = \"red\"", "unknown field `colour`"),
        ] {
            let text = format!(
                "[[servers]]\nname = \"a\"\ntransport = \"stdio\"\ncommand = \"x\"\n[[servers.tools]]\n{tools}\n"
            );
            let error = Config::parse(&text).unwrap_err().to_string();
            assert!(error.contains(says), "{tools}: {error}");
        }
        let twice = "[[servers]]\nname = \"a\"\ntransport = \"stdio\"\ncommand = \"x\"\n[[servers.tools]]\nname = \"x\"\n[[servers.tools]]\nname = \"x\"\n";
        assert!(
            Config::parse(twice)
                .unwrap_err()
                .to_string()
                .contains("two `[[servers.tools]]`")
        );
    }
}
