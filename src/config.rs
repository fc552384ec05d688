//! Settings: the YAML layers (built-in defaults, the user file, the project's `.sbx.yaml`, `SBX_*`
//! environment variables, command-line flags) merged into one typed [`Settings`], remembering where
//! each value came from. Reading files happens here; what the values mean is up to their users.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::allowlist::{self, Entry};
use crate::env;

pub const PROJECT_FILE: &str = ".sbx.yaml";
pub const DEFAULT_IMAGE_TAG: &str = "sbx-sandbox:latest";
pub const DEFAULT_BASE_IMAGE: &str = "debian:trixie-slim";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GitMode {
    /// A per-session repository that borrows the host's objects read-only.
    #[default]
    Isolated,
    /// A plain `git worktree` of the host repository (its `.git` is writable from inside).
    Worktree,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClaudeConfig {
    #[default]
    Mount,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TokenStoreKind {
    /// The platform keychain: macOS Keychain; Secret Service or kernel keyutils on Linux.
    #[default]
    Auto,
    /// A 0600 file under the config folder, for headless machines (explicit opt-in).
    File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VmProvider {
    #[default]
    Lima,
    Colima,
}

/// Which stored tokens a session forwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Forward {
    /// `all` (the default) or `none`.
    Keyword(ForwardKeyword),
    /// An explicit list of token names.
    Names(Vec<String>),
}

impl Default for Forward {
    fn default() -> Self {
        Forward::Keyword(ForwardKeyword::All)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardKeyword {
    All,
    None,
}

impl Forward {
    pub fn includes(&self, name: &str) -> bool {
        match self {
            Forward::Keyword(ForwardKeyword::All) => true,
            Forward::Keyword(ForwardKeyword::None) => false,
            Forward::Names(n) => n.iter().any(|x| x == name),
        }
    }
}

/// The resolved settings of one invocation.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub command: Vec<String>,
    pub repos: Vec<PathBuf>,
    pub default_allowlist: bool,
    /// User entries only; [`Settings::allowlist`] adds the defaults.
    pub allow: Vec<String>,
    /// Where each entry of `allow` came from, in the same order.
    #[serde(skip)]
    pub allow_sources: Vec<Source>,
    pub network: Option<String>,
    pub docker_host: Option<String>,
    /// Upstream DNS servers for the session's resolver (the engine's own when empty).
    pub dns: Vec<IpAddr>,
    pub resources: Resources,
    pub image: ImageSettings,
    pub claude: ClaudeSettings,
    pub tokens: TokenSettings,
    pub token_store: TokenStoreKind,
    pub git: GitSettings,
    pub vm: VmSettings,
    /// Keep a record of the command's terminal output in the session folder
    /// (`sbx log --replay`).
    pub record: bool,
    /// Keep package-manager caches per project across sessions (`sbx cache ls|rm`).
    pub caches: bool,
    /// Keep one gate started ahead for the next session (`spare`).
    pub spare: bool,
    /// Where each key's value came from, by dotted key.
    #[serde(skip)]
    pub sources: BTreeMap<String, Source>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Resources {
    /// `None`: up to 4, never more than the engine has.
    pub cpus: Option<f64>,
    /// Bytes. `None`: half the engine's memory, at most 8 GiB.
    pub memory: Option<u64>,
    pub pids: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageSettings {
    pub tag: String,
    pub dockerfile: Option<PathBuf>,
    pub base: String,
    pub extra_ca_certs: Vec<PathBuf>,
    /// Set by `sbx setup --update` (not a setting): a new value rebuilds the image's Claude Code
    /// layer with the newest release.
    #[serde(skip)]
    pub claude_code_refresh: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClaudeSettings {
    pub config: ClaudeConfig,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenSettings {
    pub forward: Forward,
}

#[derive(Debug, Clone, Serialize)]
pub struct GitSettings {
    pub mode: GitMode,
}

#[derive(Debug, Clone, Serialize)]
pub struct VmSettings {
    pub provider: VmProvider,
    pub cpus: u32,
    pub memory_gib: f64,
    pub disk_gib: f64,
}

/// One entry of the effective allowlist, for `sbx config show`.
#[derive(Debug, Clone, PartialEq)]
pub struct AllowRow {
    pub entry: String,
    pub source: Source,
    /// Why a built-in entry is there.
    pub reason: Option<String>,
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(String),
    Flag,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Env(v) => write!(f, "env {v}"),
            Source::Flag => f.write_str("command line"),
        }
    }
}

/// One layer as written by a user: every key optional, unknown keys rejected.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub command: Option<Vec<String>>,
    pub repos: Option<Vec<PathBuf>>,
    pub default_allowlist: Option<bool>,
    pub allow: Option<Vec<String>>,
    pub network: Option<String>,
    pub docker_host: Option<String>,
    pub dns: Option<Vec<IpAddr>>,
    pub resources: Option<ResourcesLayer>,
    pub image: Option<ImageLayer>,
    pub claude: Option<ClaudeLayer>,
    pub tokens: Option<TokensLayer>,
    pub token_store: Option<TokenStoreKind>,
    pub git: Option<GitLayer>,
    pub vm: Option<VmLayer>,
    pub record: Option<bool>,
    pub caches: Option<bool>,
    pub spare: Option<bool>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesLayer {
    pub cpus: Option<f64>,
    pub memory: Option<MemoryValue>,
    pub pids: Option<i64>,
}

/// `4g`, `512m`, `4GiB` or a number of bytes.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MemoryValue {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageLayer {
    pub tag: Option<String>,
    pub dockerfile: Option<PathBuf>,
    pub base: Option<String>,
    pub extra_ca_certs: Option<Vec<PathBuf>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaudeLayer {
    pub config: Option<ClaudeConfig>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensLayer {
    pub forward: Option<Forward>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitLayer {
    pub mode: Option<GitMode>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmLayer {
    pub provider: Option<VmProvider>,
    pub cpus: Option<u32>,
    pub memory: Option<f64>,
    pub disk: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file `{path}` is not a regular file of at most 1 MiB")]
    NotAFile { path: PathBuf },
    #[error("invalid config file `{path}`: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value in `{var}`: {message}")]
    Env { var: String, message: String },
    #[error("invalid setting `{key}` (from {origin}): {message}")]
    Value {
        key: String,
        origin: Source,
        message: String,
    },
}

impl crate::error::Hint for ConfigError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            ConfigError::Env { var, .. } => format!("fix or unset `{var}`"),
            ConfigError::Parse { path, .. } | ConfigError::Read { path, .. } => format!(
                "fix `{}` (`sbx config show` lists every valid key)",
                path.display()
            ),
            ConfigError::NotAFile { path } => {
                format!(
                    "replace `{}` with a YAML file, or remove it",
                    path.display()
                )
            }
            ConfigError::Value { .. } => {
                "`sbx config show` lists every setting and its source".into()
            }
        })
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            command: vec!["claude".into()],
            repos: Vec::new(),
            default_allowlist: true,
            allow: Vec::new(),
            allow_sources: Vec::new(),
            network: None,
            docker_host: None,
            dns: Vec::new(),
            resources: Resources {
                cpus: None,
                memory: None,
                pids: 4096,
            },
            image: ImageSettings {
                tag: DEFAULT_IMAGE_TAG.into(),
                dockerfile: None,
                base: DEFAULT_BASE_IMAGE.into(),
                extra_ca_certs: Vec::new(),
                claude_code_refresh: None,
            },
            claude: ClaudeSettings {
                config: ClaudeConfig::Mount,
            },
            tokens: TokenSettings {
                forward: Forward::default(),
            },
            token_store: TokenStoreKind::Auto,
            git: GitSettings {
                mode: GitMode::Isolated,
            },
            vm: VmSettings {
                provider: VmProvider::Lima,
                cpus: 4,
                memory_gib: 8.0,
                disk_gib: 64.0,
            },
            record: true,
            caches: true,
            spare: true,
            sources: BTreeMap::new(),
        }
    }
}

/// Reads one YAML layer. Relative paths in it are resolved against the file's folder.
pub fn read_layer(path: &Path) -> Result<Option<Layer>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let mut layer = parse_layer(&text).map_err(|message| ConfigError::Parse {
        path: path.to_owned(),
        message,
    })?;
    if let Some(dir) = path.parent() {
        layer.resolve_paths(dir);
    }
    Ok(Some(layer))
}

/// The largest project file sbx reads: far more than any real one, and a bound on what a
/// hostile repository can make it read.
const MAX_PROJECT_FILE: u64 = 1 << 20;

/// A project file as read once: the bytes, and the layer parsed from exactly those bytes, so the
/// content a user approves is the content that takes effect.
#[derive(Debug, Clone)]
pub struct ProjectFile {
    pub path: PathBuf,
    pub layer: Layer,
    bytes: Vec<u8>,
}

impl ProjectFile {
    /// Reads and parses a project file; `None` when there is none. The file may be the agent's
    /// work (a kept checkout, a merged session branch), so a FIFO, socket or device there is an
    /// error instead of a read that blocks or never ends (`O_NONBLOCK`, then a regular-file
    /// check on the opened file), and its size is bounded.
    pub fn read(path: &Path) -> Result<Option<ProjectFile>, ConfigError> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let read_err = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(read_err(e)),
        };
        let meta = file.metadata().map_err(read_err)?;
        if !meta.is_file() || meta.len() > MAX_PROJECT_FILE {
            return Err(ConfigError::NotAFile {
                path: path.to_owned(),
            });
        }
        let mut bytes = Vec::new();
        file.take(MAX_PROJECT_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if bytes.len() as u64 > MAX_PROJECT_FILE {
            return Err(ConfigError::NotAFile {
                path: path.to_owned(),
            });
        }
        let parse_err = |message: String| ConfigError::Parse {
            path: path.to_owned(),
            message,
        };
        let text = std::str::from_utf8(&bytes).map_err(|e| parse_err(e.to_string()))?;
        let mut layer = parse_layer(text).map_err(parse_err)?;
        if let Some(dir) = path.parent() {
            layer.resolve_paths(dir);
        }
        Ok(Some(ProjectFile {
            path: path.to_owned(),
            layer,
            bytes,
        }))
    }

    /// The sha256 of the bytes the layer was parsed from, in hex.
    pub fn sha256(&self) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&self.bytes))
    }
}

/// Parses YAML text into a layer. An empty document is an empty layer.
pub fn parse_layer(text: &str) -> Result<Layer, String> {
    if text.trim().is_empty() {
        return Ok(Layer::default());
    }
    let opts = serde_saphyr::options! { strict_booleans: true };
    let layer: Option<Layer> =
        serde_saphyr::from_str_with_options(text, opts).map_err(|e| e.to_string())?;
    Ok(layer.unwrap_or_default())
}

impl Layer {
    fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(r) = &mut self.repos {
            r.iter_mut().for_each(abs);
        }
        if let Some(i) = &mut self.image {
            if let Some(d) = &mut i.dockerfile {
                abs(d);
            }
            if let Some(c) = &mut i.extra_ca_certs {
                c.iter_mut().for_each(abs);
            }
        }
    }

    /// The `SBX_*` environment layer (the names of [`crate::env::SETTINGS`]). Lists are
    /// comma-separated. Other variables are left alone: some are sbx's but no setting
    /// (`SBX_NO_PROGRESS`, `SBX_LOG`).
    pub fn from_env(
        vars: impl IntoIterator<Item = (String, String)>,
        cwd: &Path,
    ) -> Result<(Layer, BTreeMap<String, String>), ConfigError> {
        let mut l = Layer::default();
        let mut used = BTreeMap::new();
        for (var, value) in vars {
            let bad = |message: String| ConfigError::Env {
                var: var.clone(),
                message,
            };
            let list = || -> Vec<String> {
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            };
            let paths = || -> Vec<PathBuf> { list().into_iter().map(|p| cwd.join(p)).collect() };
            let key = match var.as_str() {
                env::SBX_ALLOW => {
                    l.allow = Some(list());
                    "allow"
                }
                env::SBX_DEFAULT_ALLOWLIST => {
                    l.default_allowlist = Some(parse_bool(&value).map_err(bad)?);
                    "default_allowlist"
                }
                env::SBX_NETWORK => {
                    l.network = Some(value.clone());
                    "network"
                }
                env::SBX_DOCKER_HOST => {
                    l.docker_host = Some(value.clone());
                    "docker_host"
                }
                env::SBX_DNS => {
                    let ips = list()
                        .iter()
                        .map(|s| {
                            s.parse()
                                .map_err(|_| bad(format!("`{s}` is not an IP address")))
                        })
                        .collect::<Result<_, _>>()?;
                    l.dns = Some(ips);
                    "dns"
                }
                env::SBX_CPUS => {
                    let n = value
                        .parse()
                        .map_err(|_| bad("expected a number of CPUs such as `2`".into()))?;
                    l.resources.get_or_insert_default().cpus = Some(n);
                    "resources.cpus"
                }
                env::SBX_MEMORY => {
                    l.resources.get_or_insert_default().memory =
                        Some(MemoryValue::Text(value.clone()));
                    "resources.memory"
                }
                env::SBX_PIDS => {
                    let n = value
                        .parse()
                        .map_err(|_| bad("expected a whole number".into()))?;
                    l.resources.get_or_insert_default().pids = Some(n);
                    "resources.pids"
                }
                env::SBX_IMAGE_TAG => {
                    l.image.get_or_insert_default().tag = Some(value.clone());
                    "image.tag"
                }
                env::SBX_IMAGE_BASE => {
                    l.image.get_or_insert_default().base = Some(value.clone());
                    "image.base"
                }
                env::SBX_IMAGE_DOCKERFILE => {
                    l.image.get_or_insert_default().dockerfile = Some(cwd.join(&value));
                    "image.dockerfile"
                }
                env::SBX_EXTRA_CA_CERTS => {
                    l.image.get_or_insert_default().extra_ca_certs = Some(paths());
                    "image.extra_ca_certs"
                }
                env::SBX_CLAUDE_CONFIG => {
                    l.claude = Some(ClaudeLayer {
                        config: Some(parse_enum(&value).map_err(bad)?),
                    });
                    "claude.config"
                }
                env::SBX_TOKEN_STORE => {
                    l.token_store = Some(parse_enum(&value).map_err(bad)?);
                    "token_store"
                }
                env::SBX_GIT_MODE => {
                    l.git = Some(GitLayer {
                        mode: Some(parse_enum(&value).map_err(bad)?),
                    });
                    "git.mode"
                }
                env::SBX_VM_PROVIDER => {
                    l.vm.get_or_insert_default().provider = Some(parse_enum(&value).map_err(bad)?);
                    "vm.provider"
                }
                env::SBX_RECORD => {
                    l.record = Some(parse_bool(&value).map_err(bad)?);
                    "record"
                }
                env::SBX_SPARE => {
                    l.spare = Some(parse_bool(&value).map_err(bad)?);
                    "spare"
                }
                env::SBX_CACHES => {
                    l.caches = Some(parse_bool(&value).map_err(bad)?);
                    "caches"
                }
                _ => continue,
            };
            used.insert(key.to_owned(), var.clone());
        }
        Ok((l, used))
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err(format!("expected `true` or `false`, got `{v}`")),
    }
}

fn parse_enum<T: for<'de> Deserialize<'de>>(v: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(v.to_ascii_lowercase()))
        .map_err(|e| e.to_string())
}

/// Parses `4g`, `512m`, `1.5GiB`, `2048` (bytes) and similar.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a size such as `4g` or `512m`"))?;
    let mult: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        u => {
            return Err(format!(
                "unknown size unit `{u}` in `{text}` (use k, m or g)"
            ));
        }
    };
    let bytes = (n * mult as f64) as u64;
    if bytes < (6 << 20) {
        return Err(format!(
            "`{text}` is too little memory for a sandbox (at least 6m)"
        ));
    }
    Ok(bytes)
}

impl Settings {
    /// Applies one layer on top, recording where each value came from. `allow` and `repos`
    /// accumulate across layers; everything else is replaced.
    pub fn apply(&mut self, layer: Layer, source: &Source) -> Result<(), ConfigError> {
        self.apply_with_env_names(layer, source, &BTreeMap::new())
    }

    fn apply_with_env_names(
        &mut self,
        layer: Layer,
        source: &Source,
        env_names: &BTreeMap<String, String>,
    ) -> Result<(), ConfigError> {
        let src = |key: &str| match (source, env_names.get(key)) {
            (Source::Env(_), Some(var)) => Source::Env(var.clone()),
            _ => source.clone(),
        };
        let note = |key: &str, sources: &mut BTreeMap<String, Source>| {
            sources.insert(key.to_owned(), src(key));
        };
        macro_rules! set {
            ($key:literal, $dst:expr, $val:expr) => {
                if let Some(v) = $val {
                    $dst = v;
                    note($key, &mut self.sources);
                }
            };
        }
        set!(
            "command",
            self.command,
            layer.command.filter(|c| !c.is_empty())
        );
        if let Some(r) = layer.repos {
            self.repos.extend(r);
            note("repos", &mut self.sources);
        }
        set!(
            "default_allowlist",
            self.default_allowlist,
            layer.default_allowlist
        );
        if let Some(a) = layer.allow {
            if let Err(e) = allowlist::parse_all(a.iter().map(String::as_str)) {
                return Err(ConfigError::Value {
                    key: "allow".into(),
                    origin: src("allow"),
                    message: e.to_string(),
                });
            }
            self.allow_sources
                .extend(std::iter::repeat_n(src("allow"), a.len()));
            self.allow.extend(a);
            note("allow", &mut self.sources);
        }
        set!("network", self.network, layer.network.map(Some));
        set!("docker_host", self.docker_host, layer.docker_host.map(Some));
        set!("dns", self.dns, layer.dns);
        if let Some(r) = layer.resources {
            if r.cpus.is_some_and(|c| !(c > 0.0 && c.is_finite())) {
                return Err(ConfigError::Value {
                    key: "resources.cpus".into(),
                    origin: src("resources.cpus"),
                    message: "must be a positive number".into(),
                });
            }
            set!("resources.cpus", self.resources.cpus, r.cpus.map(Some));
            if let Some(m) = r.memory {
                let bytes = match m {
                    MemoryValue::Bytes(b) => Ok(b),
                    MemoryValue::Text(t) => parse_memory(&t),
                }
                .map_err(|message| ConfigError::Value {
                    key: "resources.memory".into(),
                    origin: src("resources.memory"),
                    message,
                })?;
                set!("resources.memory", self.resources.memory, Some(Some(bytes)));
            }
            set!("resources.pids", self.resources.pids, r.pids);
        }
        if let Some(i) = layer.image {
            set!("image.tag", self.image.tag, i.tag);
            set!(
                "image.dockerfile",
                self.image.dockerfile,
                i.dockerfile.map(Some)
            );
            set!("image.base", self.image.base, i.base);
            set!(
                "image.extra_ca_certs",
                self.image.extra_ca_certs,
                i.extra_ca_certs
            );
        }
        if let Some(c) = layer.claude {
            set!("claude.config", self.claude.config, c.config);
        }
        if let Some(t) = layer.tokens {
            set!("tokens.forward", self.tokens.forward, t.forward);
        }
        set!("token_store", self.token_store, layer.token_store);
        if let Some(g) = layer.git {
            set!("git.mode", self.git.mode, g.mode);
        }
        if let Some(v) = layer.vm {
            set!("vm.provider", self.vm.provider, v.provider);
            set!("vm.cpus", self.vm.cpus, v.cpus);
            set!("vm.memory", self.vm.memory_gib, v.memory);
            set!("vm.disk", self.vm.disk_gib, v.disk);
        }
        set!("record", self.record, layer.record);
        set!("caches", self.caches, layer.caches);
        set!("spare", self.spare, layer.spare);
        Ok(())
    }

    /// Loads every layer: defaults, the user file, the project file (when a project root is
    /// known), the environment, then the flags.
    pub fn load(
        user_file: &Path,
        project_root: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        cwd: &Path,
        flags: Layer,
    ) -> Result<Settings, ConfigError> {
        let project = match project_root {
            Some(root) => ProjectFile::read(&root.join(PROJECT_FILE))?,
            None => None,
        };
        Settings::user(user_file)?
            .with_project(project.as_ref())?
            .with_env_and_flags(env, cwd, flags)
    }

    /// The built-in defaults and the user file: the layers a project file is weighed against.
    pub fn user(user_file: &Path) -> Result<Settings, ConfigError> {
        let mut s = Settings::default();
        if let Some(l) = read_layer(user_file)? {
            s.apply(l, &Source::File(user_file.to_owned()))?;
        }
        Ok(s)
    }

    /// These settings with a project file on top.
    pub fn with_project(&self, project: Option<&ProjectFile>) -> Result<Settings, ConfigError> {
        let mut s = self.clone();
        if let Some(p) = project {
            s.apply(p.layer.clone(), &Source::File(p.path.clone()))?;
        }
        Ok(s)
    }

    /// These settings with the `SBX_*` environment and then the flags on top.
    pub fn with_env_and_flags(
        mut self,
        env: impl IntoIterator<Item = (String, String)>,
        cwd: &Path,
        flags: Layer,
    ) -> Result<Settings, ConfigError> {
        let (env_layer, names) = Layer::from_env(env, cwd)?;
        self.apply_with_env_names(env_layer, &Source::Env(String::new()), &names)?;
        self.apply(flags, &Source::Flag)?;
        Ok(self)
    }

    /// The effective allowlist: the defaults (unless turned off) plus every user entry.
    pub fn allowlist(&self) -> Result<Vec<Entry>, allowlist::EntryError> {
        let defaults = if self.default_allowlist {
            allowlist::defaults()
        } else {
            Vec::new()
        };
        allowlist::parse_all(
            defaults
                .iter()
                .map(|d| d.entry)
                .chain(self.allow.iter().map(String::as_str)),
        )
    }

    /// The effective allowlist as people read it: every entry as written, with where it came
    /// from (the built-in list says why each of its entries is there).
    pub fn allowlist_rows(&self) -> Vec<AllowRow> {
        let defaults = allowlist::defaults();
        let builtin = defaults
            .iter()
            .filter(|_| self.default_allowlist)
            .map(|d| AllowRow {
                entry: d.entry.to_owned(),
                source: Source::Default,
                reason: Some(d.reason.to_owned()),
            });
        let user = self.allow.iter().enumerate().map(|(i, a)| AllowRow {
            entry: a.clone(),
            source: self
                .allow_sources
                .get(i)
                .cloned()
                .unwrap_or(Source::Default),
            reason: None,
        });
        builtin.chain(user).collect()
    }

    pub fn source_of(&self, key: &str) -> Source {
        self.sources.get(key).cloned().unwrap_or(Source::Default)
    }

    /// Every key with its value rendered for people, in a stable order.
    pub fn rows(&self) -> Vec<(String, String)> {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
        let paths = |v: &[PathBuf]| {
            if v.is_empty() {
                "[]".to_owned()
            } else {
                v.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let enum_str = |v: &dyn erased::Ser| v.render();
        vec![
            ("command".into(), self.command.join(" ")),
            ("repos".into(), paths(&self.repos)),
            (
                "default_allowlist".into(),
                self.default_allowlist.to_string(),
            ),
            (
                "allow".into(),
                if self.allow.is_empty() {
                    "[]".into()
                } else {
                    self.allow.join(", ")
                },
            ),
            ("network".into(), opt(&self.network)),
            ("docker_host".into(), opt(&self.docker_host)),
            (
                "dns".into(),
                if self.dns.is_empty() {
                    "(the engine's resolver)".into()
                } else {
                    self.dns
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            ),
            (
                "resources.cpus".into(),
                self.resources
                    .cpus
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "auto (up to 4, never more than the engine has)".into()),
            ),
            (
                "resources.memory".into(),
                self.resources
                    .memory
                    .map(|m| format!("{} MiB", m >> 20))
                    .unwrap_or_else(|| "auto (half the engine's memory, at most 8 GiB)".into()),
            ),
            ("resources.pids".into(), self.resources.pids.to_string()),
            ("image.tag".into(), self.image.tag.clone()),
            (
                "image.dockerfile".into(),
                self.image
                    .dockerfile
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "(built in)".into()),
            ),
            ("image.base".into(), self.image.base.clone()),
            (
                "image.extra_ca_certs".into(),
                paths(&self.image.extra_ca_certs),
            ),
            ("claude.config".into(), enum_str(&self.claude.config)),
            ("tokens.forward".into(), enum_str(&self.tokens.forward)),
            ("token_store".into(), enum_str(&self.token_store)),
            ("git.mode".into(), enum_str(&self.git.mode)),
            ("vm.provider".into(), enum_str(&self.vm.provider)),
            ("vm.cpus".into(), self.vm.cpus.to_string()),
            ("vm.memory".into(), format!("{} GiB", self.vm.memory_gib)),
            ("vm.disk".into(), format!("{} GiB", self.vm.disk_gib)),
            ("record".into(), self.record.to_string()),
            ("caches".into(), self.caches.to_string()),
            ("spare".into(), self.spare.to_string()),
        ]
    }
}

mod erased {
    /// Renders a serde value as the word a user would write in YAML.
    pub trait Ser {
        fn render(&self) -> String;
    }
    impl<T: serde::Serialize> Ser for T {
        fn render(&self) -> String {
            match serde_json::to_value(self) {
                Ok(serde_json::Value::String(s)) => s,
                Ok(v) => v.to_string(),
                Err(_) => "?".into(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(yaml: &str) -> Layer {
        parse_layer(yaml).unwrap()
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".sbx.yaml");
        std::fs::write(&p, "allow: [a.com]\nresources:\n  cpu: 2\n").unwrap();
        let e = read_layer(&p).unwrap_err().to_string();
        assert!(e.contains("`cpu`"), "{e}");
        assert!(e.contains(&p.display().to_string()), "{e}");
        let e = parse_layer("bogus: 1").unwrap_err();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn layers_merge_in_order_and_remember_sources() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("config.yaml");
        std::fs::write(
            &user,
            "allow: [a.com]\ngit:\n  mode: worktree\nresources: {cpus: 1}\n",
        )
        .unwrap();
        let proj = dir.path().join("proj");
        std::fs::create_dir(&proj).unwrap();
        std::fs::write(
            proj.join(PROJECT_FILE),
            "allow: [b.com]\nresources: {memory: 2g}\nimage: {extra_ca_certs: [ca.pem]}\n",
        )
        .unwrap();
        let env = vec![
            ("SBX_CPUS".to_owned(), "3".to_owned()),
            ("SBX_NO_PROGRESS".to_owned(), "1".to_owned()),
        ];
        let flags = Layer {
            allow: Some(vec!["c.com:8443".into()]),
            ..Layer::default()
        };
        let s = Settings::load(&user, Some(&proj), env, dir.path(), flags).unwrap();
        assert_eq!(s.allow, vec!["a.com", "b.com", "c.com:8443"]);
        assert_eq!(s.git.mode, GitMode::Worktree);
        assert_eq!(s.resources.cpus, Some(3.0));
        assert_eq!(s.resources.memory, Some(2 << 30));
        assert_eq!(s.image.extra_ca_certs, vec![proj.join("ca.pem")]);
        assert_eq!(s.source_of("git.mode"), Source::File(user.clone()));
        assert_eq!(
            s.source_of("resources.cpus"),
            Source::Env("SBX_CPUS".into())
        );
        assert_eq!(s.source_of("allow"), Source::Flag);
        assert_eq!(s.source_of("image.tag"), Source::Default);
        let list = s.allowlist().unwrap();
        assert!(list.len() > allowlist::defaults().len());
    }

    #[test]
    fn bad_values_name_the_key() {
        let mut s = Settings::default();
        let e = s
            .apply(layer("allow: ['http://x']"), &Source::Flag)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`allow`") && e.contains("URL"), "{e}");
        let e = s
            .apply(layer("resources: {memory: lots}"), &Source::Flag)
            .unwrap_err()
            .to_string();
        assert!(e.contains("resources.memory"), "{e}");
        let e = parse_layer("git: {mode: sideways}").unwrap_err();
        assert!(e.contains("sideways"), "{e}");
        let e = Layer::from_env([("SBX_CPUS".into(), "many".into())], Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("SBX_CPUS"), "{e}");
    }

    /// Each variable `env` names a setting is one: set, it is used or refused, never ignored.
    #[test]
    fn every_settings_variable_is_read() {
        for name in crate::env::SETTINGS {
            match Layer::from_env([(name.to_string(), "x".into())], Path::new("/")) {
                Ok((_, used)) => assert!(used.values().any(|v| v == name), "{name} is ignored"),
                Err(e) => assert!(e.to_string().contains(name), "{e}"),
            }
        }
    }

    #[test]
    fn yaml_booleans_are_strict_and_forward_accepts_words_or_lists() {
        assert!(parse_layer("default_allowlist: no").is_err());
        assert_eq!(
            layer("default_allowlist: false").default_allowlist,
            Some(false)
        );
        let f = layer("tokens: {forward: none}")
            .tokens
            .unwrap()
            .forward
            .unwrap();
        assert!(!f.includes("github"));
        let f = layer("tokens: {forward: [github]}")
            .tokens
            .unwrap()
            .forward
            .unwrap();
        assert!(f.includes("github") && !f.includes("claude"));
        assert!(Forward::default().includes("x"));
    }

    #[test]
    fn project_files_are_read_once_and_only_when_regular() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(PROJECT_FILE);
        assert!(ProjectFile::read(&p).unwrap().is_none());
        std::fs::write(&p, "repos: [../other]\n").unwrap();
        let f = ProjectFile::read(&p).unwrap().unwrap();
        assert_eq!(f.layer.repos, Some(vec![dir.path().join("../other")]));
        assert_eq!(f.sha256().len(), 64);
        std::fs::remove_file(&p).unwrap();
        // A FIFO the agent planted must not hang sbx.
        let made = crate::process::Cmd::new("mkfifo")
            .arg(&p)
            .std_command()
            .status()
            .unwrap();
        assert!(made.success());
        let e = ProjectFile::read(&p).unwrap_err();
        assert!(matches!(e, ConfigError::NotAFile { .. }), "{e}");
        std::fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &p).unwrap();
        assert!(matches!(
            ProjectFile::read(&p),
            Err(ConfigError::NotAFile { .. })
        ));
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, vec![b'#'; (MAX_PROJECT_FILE + 1) as usize]).unwrap();
        assert!(matches!(
            ProjectFile::read(&p),
            Err(ConfigError::NotAFile { .. })
        ));
        std::fs::write(&p, b"allow: [\xff]\n").unwrap();
        assert!(matches!(
            ProjectFile::read(&p),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("4g").unwrap(), 4 << 30);
        assert_eq!(parse_memory("512m").unwrap(), 512 << 20);
        assert_eq!(parse_memory("1.5GiB").unwrap(), 3 << 29);
        assert!(parse_memory("1k").is_err());
        assert!(parse_memory("4 parsecs").is_err());
    }
}
