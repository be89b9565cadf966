//! Settings: defaults < `--config` TOML file < `HAUL_*` environment < command-line flags.
//!
//! Loaded once at start-up into a typed, validated [`Settings`]. Unknown keys in the file are an
//! error; unknown `HAUL_*` variables are reported as warnings (they are usually typos).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Environment variables read by the client commands, not by the daemon's settings.
const CLIENT_VARS: [&str; 2] = ["HAUL_SERVER", "HAUL_TOKEN"];

/// Most events the replay buffer may keep (a few hundred bytes each).
const MAX_EVENT_REPLAY: usize = 1_000_000;
/// Settings that are never serialised (so they are missing from the serialised defaults).
const SECRET_KEYS: [&str; 4] = ["api_token", "webhook_secret", "proxy", "credentials"];
/// Most tokens in `tokens`: each request is compared with all of them.
const MAX_TOKENS: usize = 256;
/// Bounds of `max_header_bytes`.
const HEADER_BYTES: std::ops::RangeInclusive<usize> = 1024..=1024 * 1024;

/// Every daemon setting. Field docs are the reference; `config/haul.toml` repeats them.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address the API listens on. Anything but loopback requires `api_token`.
    pub listen: SocketAddr,
    /// Where the SQLite store (`haul.db`) and the lock file live.
    pub data_dir: PathBuf,
    /// Every download lands inside this directory.
    pub download_root: PathBuf,
    /// Where partial (`.part`) files are written, at the same relative path as their
    /// destination, instead of beside it; a finished file is renamed into place. Must be on
    /// the download root's filesystem (checked at start) and outside it. Unset: beside.
    pub incomplete_root: Option<PathBuf>,
    /// Bytes to keep free on a download's filesystem: a file of known size that would leave
    /// less is not started, and its job pauses with `insufficient-storage`; 0 checks only
    /// that the file fits.
    pub min_free_space: u64,
    /// When set, every `/v1` route requires `Authorization: Bearer <token>`.
    #[serde(skip_serializing)]
    pub api_token: Option<Secret>,
    // API security (see `crate::api::guard`, `crate::api::rate`, `crate::api::scope`).
    /// Tokens limited to some scopes (`[[tokens]]`); `api_token` has them all. Their values are
    /// never serialised or printed; their names and scopes are.
    pub tokens: Vec<TokenRule>,
    /// Host names (the `Host` header, port ignored) accepted besides `localhost`, `127.0.0.1`,
    /// `[::1]` and the listen address; `"*"` accepts any (no DNS-rebinding defence).
    pub allowed_hosts: Vec<String>,
    /// Web origins (`scheme://host[:port]`) whose pages may call the API (and get CORS
    /// headers), besides the daemon's own origin and those of `allowed_hosts`.
    pub allowed_origins: Vec<String>,
    /// Largest request head (request line and headers) accepted, in bytes; larger gets 431.
    pub max_header_bytes: usize,
    /// Job submissions (`POST /v1/jobs`, retry) per second and client, on average; 0: no limit.
    pub submit_rate_per_second: f64,
    /// Submissions a client may make at once before `submit_rate_per_second` applies.
    pub submit_burst: u32,
    /// Jobs downloading at the same time.
    pub max_concurrent_jobs: usize,
    /// Queued jobs allowed before submissions get 429.
    pub max_queued_jobs: u64,
    /// Files allowed in one job; also caps what a `url_template` expands to.
    pub max_files_per_job: usize,
    /// Largest request body accepted, in bytes.
    pub max_request_bytes: usize,
    /// Longest a request may take (except event streams and waits) before it gets 503.
    pub request_timeout_secs: u64,
    /// Consecutive failed attempts (without a byte of progress) before a file fails.
    pub retry_attempts: u32,
    /// First retry delay; doubles with each failure, with full jitter.
    pub retry_base_delay_ms: u64,
    /// Longest retry delay (a server's `Retry-After` may ask for more, up to an hour).
    pub retry_max_delay_ms: u64,
    /// Time allowed to establish a connection.
    pub connect_timeout_secs: u64,
    /// A connection that delivers no byte for this long is dropped and retried.
    pub stall_timeout_secs: u64,
    /// Connections one file may use at most; the engine adds them only while they add
    /// throughput.
    pub max_connections_per_file: usize,
    /// Connections to one host across all jobs.
    pub max_connections_per_host: usize,
    /// A range is split for another connection only if both halves keep at least this many
    /// bytes; smaller files go down one stream.
    pub min_segment_size: u64,
    /// Download rate limit over all jobs, bytes per second; 0 means none.
    pub max_bytes_per_second: u64,
    /// Redirects followed per request.
    pub max_redirects: usize,
    /// How often progress is fsynced and saved to the store (a `kill -9` loses at most this).
    pub checkpoint_interval_ms: u64,
    /// Lease on a running job; renewed every third of it. An expired lease requeues the job.
    pub lease_secs: u64,
    /// How long shutdown waits for workers to checkpoint before exiting anyway.
    pub shutdown_grace_ms: u64,
    /// Events kept for clients that reconnect with `Last-Event-ID`; 0 keeps none.
    pub event_replay_buffer: usize,
    /// `User-Agent` sent to origins.
    pub user_agent: String,
    /// `text` for people, `json` for log collectors.
    pub log_format: LogFormat,
    /// Finished jobs (completed, failed, cancelled) are forgotten this long after they
    /// finished, by a background task; 0 keeps them until pruned by hand.
    pub history_retention_secs: u64,
    /// Global webhook subscriptions: every event (or those listed in `events`) is POSTed to
    /// each, signed with its `secret`.
    pub webhooks: Vec<WebhookSubscription>,
    /// Key that signs deliveries to jobs' `callback_url`s. Unset: one is generated at first
    /// start and kept in `<data_dir>/webhook-secret`.
    #[serde(skip_serializing)]
    pub webhook_secret: Option<Secret>,
    /// Time allowed for one webhook request, connecting included.
    pub webhook_timeout_secs: u64,
    /// Attempts per delivery (the first included) before it is given up.
    pub webhook_max_attempts: u32,
    /// First delay between attempts of a delivery; doubles with each failure, with jitter.
    pub webhook_retry_base_delay_ms: u64,
    /// Longest delay between attempts of a delivery.
    pub webhook_retry_max_delay_ms: u64,
    /// Deliveries waiting per receiver; more are dropped (and recorded as dropped).
    pub webhook_queue_capacity: usize,
    /// Proxy for every download (`http://`, `https://`, `socks5://`, `socks5h://`); a job's
    /// own `proxy` replaces it. Unset: downloads go direct (the `HTTP_PROXY` family of
    /// variables is not read). Never serialised: it may carry a password.
    #[serde(skip_serializing)]
    pub proxy: Option<Secret>,
    /// Hosts reached without a proxy (comma list, as `NO_PROXY`: `example.com` also covers its
    /// subdomains, `*` covers all, IP networks as `10.0.0.0/8`). Unset: the environment's
    /// `NO_PROXY` (or `no_proxy`) applies.
    pub no_proxy: Option<String>,
    /// Downloads may connect to loopback addresses (127/8, ::1). See
    /// [`crate::fetch::address_policy`] for the categories and where they are checked.
    pub allow_loopback: bool,
    /// Downloads may connect to private addresses (10/8, 172.16/12, 192.168/16, 100.64/10,
    /// fc00::/7, fec0::/10).
    pub allow_private: bool,
    /// Downloads may connect to link-local addresses (169.254/16, fe80::/10), the metadata
    /// addresses excepted.
    pub allow_link_local: bool,
    /// Downloads may connect to cloud metadata services (169.254.169.254, fd00:ec2::254, …).
    pub allow_metadata: bool,
    /// Rules that attach a token or headers to the URLs they match (`[[credentials]]`); the
    /// first matching rule applies. Never serialised or printed.
    #[serde(skip_serializing)]
    pub credentials: Vec<CredentialRule>,
}

/// One credential rule (`[[credentials]]` in the file): match a URL by `host` (exact, or
/// `*.suffix` for its subdomains) or by `url_regex`, and send `token` (as `Authorization:
/// Bearer`) and `headers` to it. A job's own `access_token` and headers of the same name win.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialRule {
    /// Host to match: `example.com` (that host only) or `*.example.com` (its subdomains).
    #[serde(default)]
    pub host: Option<String>,
    /// Regular expression matched against the whole URL.
    #[serde(default)]
    pub url_regex: Option<String>,
    /// Sent as `Authorization: Bearer <token>`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// Extra headers (names and secret values).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, Secret>,
}

impl fmt::Debug for CredentialRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialRule")
            .field("host", &self.host)
            .field("url_regex", &self.url_regex)
            .field("token", &self.token)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// One scoped API token (`[[tokens]]` in the file).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRule {
    /// Shown in logs and used as the rate-limit key; default `tokens[<index>]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Sent as `Authorization: Bearer <token>`; never serialised or printed.
    #[serde(skip_serializing)]
    pub token: Secret,
    /// What the token may do: `read`, `submit`, `admin` (admin implies the other two).
    pub scopes: Vec<crate::api::scope::Scope>,
}

impl fmt::Debug for TokenRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRule")
            .field("name", &self.name)
            .field("token", &self.token)
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// One global webhook subscription (`[[webhooks]]` in the file).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSubscription {
    /// Where events are POSTed (http or https).
    pub url: String,
    /// Key of the `X-Haul-Signature` HMAC; never serialised or printed.
    #[serde(skip_serializing)]
    pub secret: Secret,
    /// Event types to send (`job.completed`, …); absent means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
}

impl fmt::Debug for WebhookSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a token in its query: show it as logs do.
        let url = url::Url::parse(&self.url)
            .map(|u| crate::telemetry::redact_url(&u))
            .unwrap_or_else(|_| "[invalid]".to_owned());
        f.debug_struct("WebhookSubscription")
            .field("url", &url)
            .field("secret", &self.secret)
            .field("events", &self.events)
            .finish()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            data_dir: PathBuf::from("./haul-data"),
            download_root: PathBuf::from("./downloads"),
            incomplete_root: None,
            min_free_space: 1 << 30,
            api_token: None,
            tokens: Vec::new(),
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            max_header_bytes: 16 * 1024,
            submit_rate_per_second: 1000.0,
            submit_burst: 10_000,
            max_concurrent_jobs: 4,
            max_queued_jobs: 100_000,
            max_files_per_job: 10_000,
            max_request_bytes: 4 * 1024 * 1024,
            request_timeout_secs: 30,
            retry_attempts: 5,
            retry_base_delay_ms: 1_000,
            retry_max_delay_ms: 60_000,
            connect_timeout_secs: 15,
            stall_timeout_secs: 30,
            max_connections_per_file: 16,
            max_connections_per_host: 16,
            min_segment_size: 4 * 1024 * 1024,
            max_bytes_per_second: 0,
            max_redirects: 10,
            checkpoint_interval_ms: 2_000,
            lease_secs: 30,
            shutdown_grace_ms: 4_000,
            event_replay_buffer: crate::events::DEFAULT_REPLAY,
            user_agent: concat!("haul/", env!("CARGO_PKG_VERSION")).to_owned(),
            log_format: LogFormat::Text,
            history_retention_secs: 7 * 24 * 60 * 60,
            webhooks: Vec::new(),
            webhook_secret: None,
            webhook_timeout_secs: 10,
            webhook_max_attempts: 8,
            webhook_retry_base_delay_ms: 1_000,
            webhook_retry_max_delay_ms: 60_000,
            webhook_queue_capacity: 1_000,
            proxy: None,
            no_proxy: None,
            allow_loopback: true,
            allow_private: true,
            allow_link_local: false,
            allow_metadata: false,
            credentials: Vec::new(),
        }
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Serialising skips the tokens and secrets, so the printed settings cannot contain
        // them; webhook URLs are shown redacted (their query may carry a token).
        let mut shown = serde_json::to_value(self).map_err(|_| fmt::Error)?;
        if let Some(hooks) = shown.get_mut("webhooks") {
            *hooks = serde_json::Value::from(format!("{:?}", self.webhooks));
        }
        let set = |on: bool| if on { "[set]" } else { "[unset]" };
        write!(
            f,
            "Settings {shown} api_token={} webhook_secret={} proxy={} credentials={}",
            set(self.api_token.is_some()),
            set(self.webhook_secret.is_some()),
            set(self.proxy.is_some()),
            self.credentials.len(),
        )
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A secret string: never printed by `Debug`, never serialised.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for comparison.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Environment values that look like numbers arrive as numbers; a token is still a string.
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a token string")
            }
            fn visit_str<E>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_owned()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Values given as command-line flags; `None` means "not given".
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_root: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_jobs: Option<usize>,
}

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the settings: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid setting: {0}")]
    Invalid(String),
}

/// The settings, and warnings to log once logging is set up.
#[derive(Debug)]
pub struct Loaded {
    pub settings: Settings,
    pub warnings: Vec<String>,
}

/// Loads and validates the settings from their four layers.
pub fn load(file: Option<&Path>, flags: &Overrides) -> Result<Loaded, ConfigError> {
    load_from(file, flags, std::env::vars())
}

/// [`load`] with an explicit environment, for tests.
pub fn load_from(
    file: Option<&Path>,
    flags: &Overrides,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Loaded, ConfigError> {
    let known = known_keys();
    let mut warnings = Vec::new();
    let mut env_values = Vec::new();
    for (name, value) in env {
        let Some(key) = name.strip_prefix("HAUL_") else {
            continue;
        };
        if CLIENT_VARS.contains(&name.as_str()) {
            continue;
        }
        let key = key.to_ascii_lowercase();
        if known.contains(&key) {
            env_values.push((key, value));
        } else {
            warnings.push(format!("ignoring unknown environment variable {name}"));
        }
    }
    let mut figment = Figment::from(Serialized::defaults(Settings::default()));
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError::MissingFile(path.to_owned()));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    if !env_values.is_empty() {
        figment = figment.merge(Serialized::defaults(parse_env_values(env_values)));
    }
    let settings: Settings = figment
        .merge(Serialized::defaults(flags))
        .extract()
        .map_err(|e| ConfigError::Load(Box::new(e)))?;
    validate(&settings)?;
    Ok(Loaded { settings, warnings })
}

/// Environment values are text; numbers and booleans are recognised the way figment's own
/// `Env` provider does it.
fn parse_env_values(env: Vec<(String, String)>) -> figment::value::Dict {
    env.into_iter()
        .map(|(key, value)| {
            let parsed = value
                .parse()
                .unwrap_or_else(|_| figment::value::Value::from(value));
            (key, parsed)
        })
        .collect()
}

impl Settings {
    /// The address policy these settings describe.
    pub fn address_policy(&self) -> crate::fetch::AddressPolicy {
        crate::fetch::AddressPolicy {
            allow_loopback: self.allow_loopback,
            allow_private: self.allow_private,
            allow_link_local: self.allow_link_local,
            allow_metadata: self.allow_metadata,
        }
    }
}

fn known_keys() -> Vec<String> {
    match serde_json::to_value(Settings::default()) {
        Ok(serde_json::Value::Object(map)) => {
            let mut keys: Vec<String> = map.keys().cloned().collect();
            keys.extend(SECRET_KEYS.map(str::to_owned));
            keys
        }
        _ => SECRET_KEYS.map(str::to_owned).to_vec(),
    }
}

fn validate(s: &Settings) -> Result<(), ConfigError> {
    let invalid = |msg: String| Err(ConfigError::Invalid(msg));
    if s.api_token
        .as_ref()
        .is_some_and(|t| t.expose().trim().is_empty())
    {
        return invalid("api_token is empty".into());
    }
    if !s.listen.ip().is_loopback() && s.api_token.is_none() && s.tokens.is_empty() {
        return invalid(format!(
            "refusing to listen on {} without an API token: anyone who can reach it could write \
             files on this machine. Set HAUL_API_TOKEN (or api_token or [[tokens]] in the config \
             file), or listen on 127.0.0.1",
            s.listen
        ));
    }
    if !(1..=1024).contains(&s.max_concurrent_jobs) {
        return invalid("max_concurrent_jobs must be between 1 and 1024".into());
    }
    if s.max_files_per_job == 0 || s.max_queued_jobs == 0 {
        return invalid("max_files_per_job and max_queued_jobs must be at least 1".into());
    }
    if s.retry_base_delay_ms == 0 || s.retry_base_delay_ms > s.retry_max_delay_ms {
        return invalid(
            "retry_base_delay_ms must be positive and at most retry_max_delay_ms".into(),
        );
    }
    if s.checkpoint_interval_ms < 100 || s.lease_secs < 3 {
        return invalid(
            "checkpoint_interval_ms must be at least 100 and lease_secs at least 3".into(),
        );
    }
    if s.max_connections_per_file == 0 || s.max_connections_per_host == 0 {
        return invalid(
            "max_connections_per_file and max_connections_per_host must be at least 1".into(),
        );
    }
    if s.min_segment_size < 64 * 1024 {
        return invalid("min_segment_size must be at least 65536 bytes".into());
    }
    if s.request_timeout_secs == 0 {
        return invalid("request_timeout_secs must be positive".into());
    }
    if s.connect_timeout_secs == 0 || s.stall_timeout_secs == 0 {
        return invalid("connect_timeout_secs and stall_timeout_secs must be positive".into());
    }
    if s.event_replay_buffer > MAX_EVENT_REPLAY {
        return invalid(format!(
            "event_replay_buffer must be at most {MAX_EVENT_REPLAY}"
        ));
    }
    validate_webhooks(s)?;
    validate_sources(s)?;
    validate_security(s)
}

fn validate_security(s: &Settings) -> Result<(), ConfigError> {
    let invalid = |msg: String| Err(ConfigError::Invalid(msg));
    if s.tokens.len() > MAX_TOKENS {
        return invalid(format!("at most {MAX_TOKENS} tokens"));
    }
    let mut seen = std::collections::HashSet::new();
    let mut names = std::collections::HashSet::new();
    let all = s.api_token.iter().chain(s.tokens.iter().map(|t| &t.token));
    for (i, token) in all.enumerate() {
        // The values are not echoed: they are secrets.
        if token.expose().trim().is_empty() || token.expose().chars().any(char::is_whitespace) {
            return invalid(format!("token {i} is empty or contains white space"));
        }
        if !seen.insert(token.expose()) {
            return invalid("two tokens (api_token included) have the same value".into());
        }
    }
    for (i, rule) in s.tokens.iter().enumerate() {
        if rule.scopes.is_empty() {
            return invalid(format!("tokens[{i}].scopes is empty"));
        }
        let name = rule.name.clone().unwrap_or_else(|| format!("tokens[{i}]"));
        if name.trim().is_empty() || !names.insert(name) {
            return invalid(format!("tokens[{i}].name is empty or not unique"));
        }
    }
    for host in &s.allowed_hosts {
        if host != "*" && crate::api::guard::parse_host(host).is_none() {
            return invalid(format!(
                "allowed_hosts: {host:?} is not a host name or address"
            ));
        }
    }
    for origin in &s.allowed_origins {
        if crate::api::guard::parse_origin(origin).is_none() {
            return invalid(format!(
                "allowed_origins: {origin:?} is not an origin (scheme://host[:port])"
            ));
        }
    }
    if !HEADER_BYTES.contains(&s.max_header_bytes) {
        return invalid(format!(
            "max_header_bytes must be between {} and {}",
            HEADER_BYTES.start(),
            HEADER_BYTES.end()
        ));
    }
    if !s.submit_rate_per_second.is_finite() || s.submit_rate_per_second < 0.0 {
        return invalid("submit_rate_per_second must be a number, 0 or more".into());
    }
    if s.submit_rate_per_second > 0.0 && s.submit_burst == 0 {
        return invalid("submit_burst must be at least 1 when submissions are limited".into());
    }
    Ok(())
}

fn validate_sources(s: &Settings) -> Result<(), ConfigError> {
    if let Some(proxy) = &s.proxy {
        // The value is not echoed: it may carry a password.
        crate::fetch::parse_proxy(proxy.expose())
            .map_err(|e| ConfigError::Invalid(format!("proxy: {e}")))?;
    }
    for (i, rule) in s.credentials.iter().enumerate() {
        crate::fetch::CredentialRules::compile(std::slice::from_ref(rule))
            .map_err(|e| ConfigError::Invalid(format!("credentials[{i}]: {e}")))?;
    }
    Ok(())
}

fn validate_webhooks(s: &Settings) -> Result<(), ConfigError> {
    let invalid = |msg: String| Err(ConfigError::Invalid(msg));
    if s.webhook_secret
        .as_ref()
        .is_some_and(|t| t.expose().trim().is_empty())
    {
        return invalid("webhook_secret is empty".into());
    }
    if s.webhook_timeout_secs == 0 || s.webhook_max_attempts == 0 || s.webhook_queue_capacity == 0 {
        return invalid(
            "webhook_timeout_secs, webhook_max_attempts and webhook_queue_capacity must be \
             at least 1"
                .into(),
        );
    }
    if s.webhook_retry_base_delay_ms == 0
        || s.webhook_retry_base_delay_ms > s.webhook_retry_max_delay_ms
    {
        return invalid(
            "webhook_retry_base_delay_ms must be positive and at most webhook_retry_max_delay_ms"
                .into(),
        );
    }
    for (i, hook) in s.webhooks.iter().enumerate() {
        // The URL is not echoed: its query may carry a token.
        if crate::domain::request::parse_url(&hook.url).is_err() {
            return invalid(format!("webhooks[{i}].url is not an http or https URL"));
        }
        if hook.secret.expose().trim().is_empty() {
            return invalid(format!("webhooks[{i}].secret is empty"));
        }
        for name in hook.events.iter().flatten() {
            if crate::webhooks::event_kind(name).is_none() {
                return invalid(format!("webhooks[{i}].events: unknown event type {name:?}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn file(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("haul.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn sources_come_from_the_file_and_the_environment_and_stay_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(
            &dir,
            "[[credentials]]\nhost = \"*.example.com\"\ntoken = \"TOK-123\"\n\
             headers = { Cookie = \"c=COOKIE-9\" }\n",
        );
        let vars = env(&[
            ("HAUL_PROXY", "socks5h://u:PW-77@127.0.0.1:1080"),
            ("HAUL_NO_PROXY", "localhost,.internal"),
        ]);
        let loaded = load_from(Some(&path), &Overrides::default(), vars).unwrap();
        let s = &loaded.settings;
        assert_eq!(s.credentials.len(), 1);
        assert_eq!(s.credentials[0].host.as_deref(), Some("*.example.com"));
        assert_eq!(
            s.proxy.as_ref().map(Secret::expose),
            Some("socks5h://u:PW-77@127.0.0.1:1080")
        );
        assert_eq!(s.no_proxy.as_deref(), Some("localhost,.internal"));
        let shown = format!("{s:?}");
        for secret in ["TOK-123", "COOKIE-9", "PW-77"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        for bad in [
            "[[credentials]]\nhost = \"h\"\nurl_regex = \"h\"\ntoken = \"t\"\n",
            "[[credentials]]\nhost = \"h\"\n",
            "proxy = \"ftp://PW-88@h:21\"\n",
        ] {
            let path = file(&dir, bad);
            let err = load_from(Some(&path), &Overrides::default(), env(&[])).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid(_)), "{bad}: {err}");
            assert!(!err.to_string().contains("PW-88"), "{err}");
        }
    }

    #[test]
    fn the_documented_example_parses_and_names_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/haul.toml");
        let loaded = load_from(Some(&path), &Overrides::default(), env(&[])).unwrap();
        let defaults = Settings::default();
        assert_eq!(
            format!("{:?}", loaded.settings),
            format!("{defaults:?}"),
            "the example shows the defaults"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        for key in known_keys() {
            assert!(
                text.contains(&format!("{key} = ")),
                "config/haul.toml does not document {key}"
            );
            assert!(
                text.contains(&format!("HAUL_{}", key.to_ascii_uppercase())),
                "no env var named for {key}"
            );
        }
    }

    #[test]
    fn flags_beat_env_which_beats_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(
            &dir,
            "max_concurrent_jobs = 2\nlease_secs = 9\ndata_dir = \"/from-file\"\n",
        );
        let flags = Overrides {
            max_concurrent_jobs: Some(7),
            ..Default::default()
        };
        let loaded = load_from(
            Some(&path),
            &flags,
            env(&[
                ("HAUL_MAX_CONCURRENT_JOBS", "5"),
                ("HAUL_LEASE_SECS", "11"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        let s = loaded.settings;
        assert_eq!(s.max_concurrent_jobs, 7, "flag wins");
        assert_eq!(s.lease_secs, 11, "env beats file");
        assert_eq!(
            s.data_dir,
            PathBuf::from("/from-file"),
            "file beats default"
        );
        assert_eq!(
            s.retry_attempts,
            Settings::default().retry_attempts,
            "default stays"
        );
    }

    #[test]
    fn unknown_keys_in_the_file_are_an_error_and_unknown_env_vars_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(&dir, "max_concurent_jobs = 2\n");
        let err = load_from(Some(&path), &Overrides::default(), env(&[])).unwrap_err();
        assert!(err.to_string().contains("max_concurent_jobs"), "{err}");
        let loaded = load_from(
            None,
            &Overrides::default(),
            env(&[("HAUL_LISTN", "x"), ("HAUL_SERVER", "http://h")]),
        )
        .unwrap();
        assert_eq!(
            loaded.warnings,
            vec!["ignoring unknown environment variable HAUL_LISTN"]
        );
        let missing = load_from(
            Some(&dir.path().join("nope.toml")),
            &Overrides::default(),
            env(&[]),
        );
        assert!(matches!(missing, Err(ConfigError::MissingFile(_))));
    }

    #[test]
    fn a_public_listener_needs_a_token_and_the_token_is_never_printed() {
        let public = Overrides {
            listen: Some("0.0.0.0:7070".parse().unwrap()),
            ..Default::default()
        };
        let err = load_from(None, &public, env(&[])).unwrap_err();
        assert!(err.to_string().contains("API token"), "{err}");
        let loaded = load_from(None, &public, env(&[("HAUL_API_TOKEN", "12345678")])).unwrap();
        assert_eq!(
            loaded.settings.api_token.as_ref().map(Secret::expose),
            Some("12345678")
        );
        let shown = format!("{:?}", loaded.settings);
        assert!(
            !shown.contains("12345678") && shown.contains("[set]"),
            "{shown}"
        );
    }

    #[test]
    fn webhooks_come_from_the_file_or_the_environment_and_never_print_their_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(
            &dir,
            "[[webhooks]]\nurl = \"https://h.example/in?token=QTOKEN\"\nsecret = \"S1\"\n\
             events = [\"job.completed\"]\n",
        );
        let loaded = load_from(Some(&path), &Overrides::default(), env(&[])).unwrap();
        let hooks = &loaded.settings.webhooks;
        assert_eq!(hooks.len(), 1);
        assert_eq!(hooks[0].secret.expose(), "S1");
        assert_eq!(hooks[0].events, Some(vec!["job.completed".to_owned()]));
        let from_env = load_from(
            None,
            &Overrides::default(),
            env(&[
                ("HAUL_WEBHOOKS", "[{url=\"http://h/x\",secret=\"S2\"}]"),
                ("HAUL_WEBHOOK_SECRET", "S3"),
            ]),
        )
        .unwrap()
        .settings;
        assert_eq!(from_env.webhooks[0].url, "http://h/x");
        assert_eq!(from_env.webhooks[0].events, None);
        for shown in [format!("{:?}", loaded.settings), format!("{from_env:?}")] {
            for secret in ["S1", "S2", "S3", "QTOKEN"] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
        }
        assert!(format!("{from_env:?}").contains("webhook_secret=[set]"));
    }

    #[test]
    fn bad_webhooks_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        for text in [
            "[[webhooks]]\nurl = \"ftp://h/x\"\nsecret = \"s\"\n",
            "[[webhooks]]\nurl = \"http://h/x\"\nsecret = \" \"\n",
            "[[webhooks]]\nurl = \"http://h/x\"\nsecret = \"s\"\nevents = [\"job.snapshot\"]\n",
            "[[webhooks]]\nurl = \"http://h/x\"\n",
            "webhook_max_attempts = 0\n",
        ] {
            let path = file(&dir, text);
            assert!(
                load_from(Some(&path), &Overrides::default(), env(&[])).is_err(),
                "{text}"
            );
        }
    }

    #[test]
    fn scoped_tokens_come_from_the_file_or_the_environment_and_are_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(
            &dir,
            "allowed_hosts = [\"haul.example\"]\n[[tokens]]\nname = \"ci\"\n\
             token = \"TOK-READ-1\"\nscopes = [\"read\"]\n",
        );
        let loaded = load_from(Some(&path), &Overrides::default(), env(&[])).unwrap();
        let s = &loaded.settings;
        assert_eq!(s.tokens.len(), 1);
        assert_eq!(s.tokens[0].token.expose(), "TOK-READ-1");
        assert_eq!(s.tokens[0].scopes, vec![crate::api::scope::Scope::Read]);
        assert_eq!(s.allowed_hosts, vec!["haul.example".to_owned()]);
        let public = Overrides {
            listen: Some("0.0.0.0:7070".parse().unwrap()),
            ..Default::default()
        };
        let from_env = load_from(
            None,
            &public,
            env(&[
                (
                    "HAUL_TOKENS",
                    "[{token=\"TOK-ADMIN-2\",scopes=[\"admin\"]}]",
                ),
                ("HAUL_ALLOWED_ORIGINS", "[\"https://ui.example\"]"),
                ("HAUL_SUBMIT_RATE_PER_SECOND", "0.5"),
            ]),
        )
        .expect("a scoped token is enough to listen on a public address")
        .settings;
        assert_eq!(from_env.tokens[0].token.expose(), "TOK-ADMIN-2");
        assert_eq!(
            from_env.allowed_origins,
            vec!["https://ui.example".to_owned()]
        );
        assert!((from_env.submit_rate_per_second - 0.5).abs() < f64::EPSILON);
        for shown in [format!("{s:?}"), format!("{from_env:?}")] {
            assert!(!shown.contains("TOK-"), "{shown}");
        }
        assert!(format!("{s:?}").contains("\"ci\""), "names are shown");
    }

    #[test]
    fn bad_security_settings_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        for text in [
            "[[tokens]]\ntoken = \"t1\"\nscopes = []\n",
            "[[tokens]]\ntoken = \"t1\"\nscopes = [\"root\"]\n",
            "[[tokens]]\ntoken = \" \"\nscopes = [\"read\"]\n",
            "[[tokens]]\ntoken = \"t 1\"\nscopes = [\"read\"]\n",
            "api_token = \"dupsecret\"\n[[tokens]]\ntoken = \"dupsecret\"\nscopes = [\"read\"]\n",
            "[[tokens]]\nname = \"a\"\ntoken = \"t1\"\nscopes = [\"read\"]\n\
             [[tokens]]\nname = \"a\"\ntoken = \"t2\"\nscopes = [\"read\"]\n",
            "[[tokens]]\ntoken = \"t1\"\n",
            "allowed_hosts = [\"http://h\"]\n",
            "allowed_origins = [\"ui.example\"]\n",
            "allowed_origins = [\"https://ui.example/app\"]\n",
            "max_header_bytes = 100\n",
            "submit_rate_per_second = -1.0\n",
            "submit_rate_per_second = 1.0\nsubmit_burst = 0\n",
        ] {
            let path = file(&dir, text);
            let result = load_from(Some(&path), &Overrides::default(), env(&[]));
            assert!(result.is_err(), "{text}");
            let err = result.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(!err.contains("dupsecret") && !err.contains("t1"), "{err}");
        }
    }

    #[test]
    fn nonsense_values_are_rejected() {
        for (key, value) in [
            ("HAUL_MAX_CONCURRENT_JOBS", "0"),
            ("HAUL_CHECKPOINT_INTERVAL_MS", "1"),
            ("HAUL_RETRY_BASE_DELAY_MS", "999999999"),
            ("HAUL_API_TOKEN", " "),
            ("HAUL_LISTEN", "not-an-address"),
            ("HAUL_LOG_FORMAT", "xml"),
            ("HAUL_EVENT_REPLAY_BUFFER", "1000001"),
        ] {
            assert!(
                load_from(None, &Overrides::default(), env(&[(key, value)])).is_err(),
                "{key}={value}"
            );
        }
    }
}
