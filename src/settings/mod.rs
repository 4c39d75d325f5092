//! Layered configuration: embedded defaults → a TOML file → `SIDECAR__SECTION__KEY` environment.
//!
//! Owns every default (they live in `config/default.toml`, embedded at compile time) and every
//! check of a configuration value. Nothing else in the crate reads the process environment: the
//! binary collects it once and hands it to [`Settings::load`] as a map, which is also how tests
//! pass their own environment without mutating the process's.
//!
//! Contract: a [`Settings`] value is always valid. Unknown keys in any layer are errors; values
//! are checked (URLs, addresses, sizes, durations, files) before anything starts, and each error
//! names the key. Secrets ([`Secret`]) never appear in `Debug` or serialised output.
//!
//! Not supported: reloading at run time (restart to apply a change), YAML/JSON config files.

mod validate;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};

use serde::{Deserialize, Serialize, Serializer};
use url::Url;

/// The embedded defaults; also the reference documentation of every key.
pub const DEFAULTS_TOML: &str = include_str!("../../config/default.toml");

/// Prefix of the environment variables read as configuration.
pub const ENV_PREFIX: &str = "SIDECAR";

/// Keys whose environment value is a comma-separated list.
const ENV_LIST_KEYS: &[&str] = &[
    "server.api_keys",
    "server.auth_exempt_paths",
    "server.engine_apis",
    "engine.urls",
    "encoder.models",
    "encoder.execution_providers",
    "ingest.pipelines",
];

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A layer could not be read or parsed, or a key is unknown or of the wrong type.
    #[error("configuration: {0}")]
    Load(String),
    /// A value parsed but is not acceptable.
    #[error("configuration: invalid `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

impl SettingsError {
    fn invalid(key: impl Into<String>, reason: impl fmt::Display) -> Self {
        SettingsError::Invalid { key: key.into(), reason: reason.to_string() }
    }
}

/// A secret string: redacted in `Debug` and `Serialize`, readable only through [`Secret::expose`].
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself; call only where it is sent (an HTTP header), never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// A size in bytes, written as an integer or with a unit: `512KiB`, `16MiB`, `1GiB`, `100B`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let n: u64 = digits.parse().map_err(|_| format!("`{text}` is not a size (e.g. 16MiB)"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "KB" | "kB" | "K" => 1 << 10,
            "MiB" | "MB" | "M" => 1 << 20,
            "GiB" | "GB" | "G" => 1 << 30,
            other => return Err(format!("unknown size unit `{other}` in `{text}` (use B, KiB, MiB or GiB)")),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(|| format!("`{text}` is too large"))
    }
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b >= 1 << 30 && b % (1 << 30) == 0 {
            write!(f, "{}GiB", b >> 30)
        } else if b >= 1 << 20 && b % (1 << 20) == 0 {
            write!(f, "{}MiB", b >> 20)
        } else if b >= 1 << 10 && b % (1 << 10) == 0 {
            write!(f, "{}KiB", b >> 10)
        } else {
            write!(f, "{b}B")
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Int(u64),
            Text(String),
        }
        match Repr::deserialize(d)? {
            Repr::Int(n) => Ok(ByteSize(n)),
            Repr::Text(t) => ByteSize::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The whole configuration, validated.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub engine: EngineSettings,
    pub encoder: EncoderSettings,
    pub ingest: IngestSettings,
    pub search: SearchSettings,
    pub reindex: ReindexSettings,
    pub log: LogSettings,
}

/// Reindex jobs shared by several sidecars on one cluster (`[reindex]`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReindexSettings {
    /// How long a job's lease lasts without renewal; the replica running it renews it every
    /// third of that. A job whose lease ran out is taken over by another replica.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// `serve` adopts running jobs whose lease ran out (their replica died).
    pub adopt_orphans: bool,
}

/// Bounds and defaults of the search APIs (`/search`, the hybrid clause of `_search`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSettings {
    pub max_size: usize,
    pub max_k: usize,
    pub max_num_candidates: usize,
    pub max_query_chars: usize,
    pub default_k: usize,
    pub num_candidates_factor: usize,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    /// Pipeline files: a bootstrap, written to the cluster's pipeline store when absent there.
    pub pipelines: Vec<PathBuf>,
    /// How often `serve` reads the cluster's pipeline store: a change made through any sidecar
    /// is served by every other within this period.
    #[serde(with = "humantime_serde")]
    pub watch_interval: Duration,
    /// Whether `serve` (with models configured) also loads the models the cluster's stored
    /// pipelines name, where this machine has them.
    pub load_stored_models: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: String,
    pub max_body_size: ByteSize,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    pub api_keys: Vec<ApiKeySetting>,
    /// A TOML file with more keys (`api_keys = [...]`, the same entries), read at start.
    #[serde(default, deserialize_with = "empty_path_is_none")]
    pub api_keys_file: Option<PathBuf>,
    /// Off engine API families (`_snapshot`, `_security`, …) served to `cluster_admin` keys.
    pub engine_apis: Vec<String>,
    pub auth_exempt_paths: Vec<String>,
    /// Serve without API keys on a non-loopback address (no keys on loopback needs no flag).
    pub allow_anonymous: bool,
    /// Deepest nesting of `{`/`[` accepted in a JSON or NDJSON request body.
    pub max_json_depth: usize,
    /// A connection whose request headers have not all arrived by then is closed.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A request body that has not all arrived by then is a 408.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
}

/// What a client's API key may reach, least first: each scope includes the ones before it.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Search, get, count, mappings, `_cat`, embeddings.
    Read,
    /// + `_bulk`, document writes and updates, refresh.
    Write,
    /// + index create/delete, aliases, settings, reindex jobs, cluster APIs, anything else.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

/// One entry of `server.api_keys`: a bare key (admin on every index, as before scopes), or a
/// table `{ key, scope, indices, name, cluster_admin }`. Parsed by hand, not as an untagged
/// enum, so that a misspelt field is named in the error.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ApiKeySetting {
    Plain(Secret),
    Scoped(ScopedKey),
}

impl<'de> Deserialize<'de> for ApiKeySetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = ApiKeySetting;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key (a string) or a table { key, scope, indices, name, cluster_admin }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ApiKeySetting, E> {
                Ok(ApiKeySetting::Plain(Secret::new(v)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<ApiKeySetting, A::Error> {
                ScopedKey::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(ApiKeySetting::Scoped)
            }
        }
        d.deserialize_any(Visit)
    }
}

/// The engine API families that are off unless `server.engine_apis` lists them: they act with
/// the sidecar's own engine credentials on users, keys, snapshots, plugins and nodes.
pub const ENGINE_API_FAMILIES: &[&str] =
    &["_security", "_snapshot", "_slm", "_plugins", "_opendistro", "_nodes", "_ml", "_xpack", "_watcher"];

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ScopedKey {
    pub key: Secret,
    /// Shown in logs and metrics instead of the key.
    #[serde(default)]
    pub name: Option<String>,
    pub scope: Scope,
    /// Index names or `*` patterns the key may name; a request that names no index (cluster
    /// APIs, `/_search` over everything) needs `*`.
    #[serde(default = "all_indices")]
    pub indices: Vec<String>,
    /// May reach engine APIs outside the sidecar's table (with `indices = ["*"]`).
    #[serde(default)]
    pub cluster_admin: bool,
}

fn all_indices() -> Vec<String> {
    vec!["*".into()]
}

impl ApiKeySetting {
    /// A scoped key named `name` on `indices`, without `cluster_admin`.
    pub fn scoped(name: &str, key: &str, scope: Scope, indices: &[&str]) -> Self {
        ApiKeySetting::Scoped(ScopedKey {
            key: Secret::new(key),
            name: Some(name.into()),
            scope,
            indices: indices.iter().map(|s| s.to_string()).collect(),
            cluster_admin: false,
        })
    }

    pub fn key(&self) -> &Secret {
        match self {
            ApiKeySetting::Plain(k) => k,
            ApiKeySetting::Scoped(s) => &s.key,
        }
    }
    pub fn scope(&self) -> Scope {
        match self {
            ApiKeySetting::Plain(_) => Scope::Admin,
            ApiKeySetting::Scoped(s) => s.scope,
        }
    }
    pub fn indices(&self) -> Vec<String> {
        match self {
            ApiKeySetting::Plain(_) => all_indices(),
            ApiKeySetting::Scoped(s) => s.indices.clone(),
        }
    }
    /// Whether the key may reach engine APIs outside the sidecar's table.
    pub fn cluster_admin(&self) -> bool {
        matches!(self, ApiKeySetting::Scoped(ScopedKey { cluster_admin: true, .. }))
    }
    /// The key's name for logs and metrics (`key-N` when it has none).
    pub fn name(&self, position: usize) -> String {
        match self {
            ApiKeySetting::Scoped(ScopedKey { name: Some(n), .. }) => n.clone(),
            _ => format!("key-{position}"),
        }
    }
}

impl ServerSettings {
    /// The listen address; always parses, since [`Settings::load`] checked it.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen.parse().expect("validated at load")
    }

    fn listen_addr_checked(&self) -> Result<SocketAddr, SettingsError> {
        self.listen.parse::<SocketAddr>().map_err(|_| {
            SettingsError::invalid("server.listen", format!("`{}` is not an address like 127.0.0.1:8080", self.listen))
        })
    }
}

/// Which engine the sidecar talks to.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FlavorSetting {
    Auto,
    Elasticsearch,
    Opensearch,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSettings {
    pub urls: Vec<String>,
    pub flavor: FlavorSetting,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub api_key: Option<Secret>,
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    pub retry: RetrySettings,
}

impl EngineSettings {
    /// The base URLs; always parse, since [`Settings::load`] checked them.
    pub fn parsed_urls(&self) -> Vec<Url> {
        self.urls.iter().map(|u| Url::parse(u).expect("validated at load")).collect()
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    pub max_retries: u32,
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_elapsed: Duration,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderSettings {
    pub models: Vec<PathBuf>,
    /// Empty in the file means "take ORT_DYLIB_PATH"; `None` after loading means neither was set.
    #[serde(deserialize_with = "empty_path_is_none")]
    pub ort_library: Option<PathBuf>,
    pub execution_providers: Vec<Provider>,
    pub require_gpu: bool,
    pub intra_threads: usize,
    /// Intra-op threads of the session reserved for queries (0: a quarter of the cores, at least 1).
    pub interactive_intra_threads: usize,
    pub inter_threads: usize,
    pub sessions_per_model: usize,
    pub reserve_interactive_session: bool,
    pub thread_spinning: bool,
    pub max_batch_tokens: usize,
    pub max_batch_requests: usize,
    pub queue_capacity: usize,
    pub interactive_max_inputs: usize,
    /// Query vectors kept by the shared LRU cache (0: no cache).
    pub query_cache_entries: usize,
    pub max_inputs_per_request: usize,
    pub max_input_chars: usize,
    pub auto_truncate: bool,
}

impl EncoderSettings {
    /// `intra_threads`, with 0 meaning every available core (for each session: with the reserved
    /// interactive session, one session runs bulk work and the other only short queries).
    pub fn effective_intra_threads(&self) -> usize {
        if self.intra_threads > 0 {
            self.intra_threads
        } else {
            std::thread::available_parallelism().map_or(1, usize::from)
        }
    }

    /// `interactive_intra_threads`, with 0 meaning a quarter of the cores (at least 1): a short
    /// query gains little from more, and the engine beside the sidecar needs the rest.
    pub fn effective_interactive_intra_threads(&self) -> usize {
        if self.interactive_intra_threads > 0 {
            self.interactive_intra_threads
        } else {
            (std::thread::available_parallelism().map_or(1, usize::from) / 4).max(1)
        }
    }
}

fn empty_path_is_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    Ok(s.filter(|s| !s.trim().is_empty()).map(PathBuf::from))
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

/// Largest accepted `server.max_body_size`: bulk requests are streamed in later versions, but
/// today a body is held in memory once.
const MAX_BODY_LIMIT: u64 = 1 << 30;

impl Settings {
    /// Loads defaults, then `file` (if any), then the `SIDECAR__*` entries of `env`, and validates.
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Settings, SettingsError> {
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS_TOML, FileFormat::Toml));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(SettingsError::Load(format!("config file {} does not exist", path.display())));
            }
            builder = builder.add_source(File::from(path).format(FileFormat::Toml).required(true));
        }
        let mut sidecar_env: HashMap<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // scoped keys through the environment: one JSON array instead of a comma list
        let env_keys_var = format!("{ENV_PREFIX}__SERVER__API_KEYS");
        let json_keys = match sidecar_env.get(&env_keys_var) {
            Some(v) if v.trim_start().starts_with('[') => {
                let v = sidecar_env.remove(&env_keys_var).unwrap_or_default();
                Some(keys_from_json(&v).map_err(|r| SettingsError::invalid(env_keys_var.clone(), r))?)
            }
            _ => None,
        };
        let mut environment = Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .list_separator(",")
            .try_parsing(true)
            .source(Some(sidecar_env));
        for key in ENV_LIST_KEYS {
            environment = environment.with_list_parse_key(key);
        }
        let mut settings: Settings = builder
            .add_source(environment)
            .build()
            .and_then(Config::try_deserialize)
            .map_err(|e| SettingsError::Load(e.to_string()))?;
        if let Some(keys) = json_keys {
            settings.server.api_keys = keys;
        }
        if let Some(path) = settings.server.api_keys_file.clone() {
            let more = keys_from_file(&path).map_err(|r| SettingsError::invalid("server.api_keys_file", r))?;
            settings.server.api_keys.extend(more);
        }
        if settings.encoder.ort_library.is_none() {
            settings.encoder.ort_library = env.get("ORT_DYLIB_PATH").filter(|p| !p.is_empty()).map(PathBuf::from);
        }
        settings.validate()?;
        Ok(settings)
    }

    /// The effective configuration as TOML, secrets redacted (for `config check`).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

/// Keys from a JSON array (the environment's form), each entry's error naming its position.
fn keys_from_json(text: &str) -> Result<Vec<ApiKeySetting>, String> {
    let entries: Vec<serde_json::Value> =
        serde_json::from_str(text).map_err(|e| format!("not a JSON array of keys: {e}"))?;
    entries
        .into_iter()
        .enumerate()
        .map(|(i, v)| serde_json::from_value(v).map_err(|e| format!("entry [{i}]: {e}")))
        .collect()
}

/// Keys from a TOML file holding `api_keys = [...]`, each entry's error naming its position.
fn keys_from_file(path: &Path) -> Result<Vec<ApiKeySetting>, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct KeyFile {
        api_keys: Vec<toml::Value>,
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file: KeyFile = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    file.api_keys
        .into_iter()
        .enumerate()
        .map(|(i, v)| v.try_into().map_err(|e| format!("{}: api_keys[{i}]: {e}", path.display())))
        .collect()
}

/// An ONNX Runtime execution provider: what `encoder.execution_providers` lists and which one
/// a session ended up on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Cuda,
    Cpu,
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Provider::Cuda => "cuda",
            Provider::Cpu => "cpu",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_with_units() {
        assert_eq!(ByteSize::parse("16MiB"), Ok(ByteSize(16 << 20)));
        assert_eq!(ByteSize::parse("512KiB"), Ok(ByteSize(512 << 10)));
        assert_eq!(ByteSize::parse("1GiB"), Ok(ByteSize(1 << 30)));
        assert_eq!(ByteSize::parse("100"), Ok(ByteSize(100)));
        assert_eq!(ByteSize::parse("100B"), Ok(ByteSize(100)));
        assert!(ByteSize::parse("12 parsecs").is_err());
        assert!(ByteSize::parse("MiB").is_err());
        assert!(ByteSize::parse("99999999999999GiB").is_err());
    }

    #[test]
    fn byte_sizes_round_trip_through_display() {
        for s in ["16MiB", "512KiB", "3GiB", "1000B"] {
            assert_eq!(ByteSize::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn embedded_defaults_are_valid() {
        let s = Settings::load(None, &HashMap::new()).expect("defaults load");
        assert_eq!(s.server.listen, "127.0.0.1:8080");
        assert_eq!(s.engine.urls, vec!["http://127.0.0.1:9200".to_string()]);
    }
}
