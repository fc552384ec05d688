//! Every environment variable sbx reads, named once: a constant per variable, the table the
//! README's list is checked against, and the only functions that read the process environment.
//! What a value means is left to the module that uses it (`config` parses the settings).

use std::ffi::OsString;

/// A variable sbx reads, or (a name ending in `*`) a family it passes on to a tool.
#[derive(Debug, Clone, Copy)]
pub struct Var {
    pub name: &'static str,
    /// One line for the README.
    pub about: &'static str,
}

// Settings: each sets what a config file key would (`config::Layer::from_env`).
pub const SBX_ALLOW: &str = "SBX_ALLOW";
pub const SBX_DEFAULT_ALLOWLIST: &str = "SBX_DEFAULT_ALLOWLIST";
pub const SBX_NETWORK: &str = "SBX_NETWORK";
pub const SBX_DOCKER_HOST: &str = "SBX_DOCKER_HOST";
pub const SBX_DNS: &str = "SBX_DNS";
pub const SBX_CPUS: &str = "SBX_CPUS";
pub const SBX_MEMORY: &str = "SBX_MEMORY";
pub const SBX_PIDS: &str = "SBX_PIDS";
pub const SBX_IMAGE_TAG: &str = "SBX_IMAGE_TAG";
pub const SBX_IMAGE_BASE: &str = "SBX_IMAGE_BASE";
pub const SBX_IMAGE_DOCKERFILE: &str = "SBX_IMAGE_DOCKERFILE";
pub const SBX_EXTRA_CA_CERTS: &str = "SBX_EXTRA_CA_CERTS";
pub const SBX_CLAUDE_CONFIG: &str = "SBX_CLAUDE_CONFIG";
pub const SBX_TOKEN_STORE: &str = "SBX_TOKEN_STORE";
pub const SBX_GIT_MODE: &str = "SBX_GIT_MODE";
pub const SBX_VM_PROVIDER: &str = "SBX_VM_PROVIDER";
pub const SBX_RECORD: &str = "SBX_RECORD";
pub const SBX_SPARE: &str = "SBX_SPARE";
pub const SBX_CACHES: &str = "SBX_CACHES";

// sbx's own, beyond the settings.
pub const SBX_LOG: &str = "SBX_LOG";
pub const SBX_NO_PROGRESS: &str = "SBX_NO_PROGRESS";
pub const SBX_TIMINGS: &str = "SBX_TIMINGS";
pub const SBX_LIMA_HOME: &str = "SBX_LIMA_HOME";
pub const SBX_SSH_KEY: &str = "SBX_SSH_KEY";
pub const SBX_KEYRING_NAMESPACE: &str = "SBX_KEYRING_NAMESPACE";
pub const SBX_NO_SECRET_SERVICE: &str = "SBX_NO_SECRET_SERVICE";

// Standard and other tools' variables.
pub const NO_COLOR: &str = "NO_COLOR";
pub const TERM: &str = "TERM";
pub const HOME: &str = "HOME";
pub const USER: &str = "USER";
pub const LOGNAME: &str = "LOGNAME";
pub const PATH: &str = "PATH";
pub const TMPDIR: &str = "TMPDIR";
pub const XDG_CONFIG_HOME: &str = "XDG_CONFIG_HOME";
pub const XDG_CACHE_HOME: &str = "XDG_CACHE_HOME";
pub const XDG_DATA_HOME: &str = "XDG_DATA_HOME";
pub const XDG_RUNTIME_DIR: &str = "XDG_RUNTIME_DIR";
pub const DOCKER_HOST: &str = "DOCKER_HOST";
pub const DOCKER_CONTEXT: &str = "DOCKER_CONTEXT";
pub const DOCKER_CONFIG: &str = "DOCKER_CONFIG";
pub const LIMA_HOME: &str = "LIMA_HOME";
pub const COLIMA_HOME: &str = "COLIMA_HOME";
pub const CLAUDE_CONFIG_DIR: &str = "CLAUDE_CONFIG_DIR";
pub const DBUS_SESSION_BUS_ADDRESS: &str = "DBUS_SESSION_BUS_ADDRESS";
pub const GH_TOKEN: &str = "GH_TOKEN";
pub const HTTP_PROXY: &str = "HTTP_PROXY";
pub const HTTPS_PROXY: &str = "HTTPS_PROXY";
pub const NO_PROXY: &str = "NO_PROXY";
pub const HTTP_PROXY_LOWER: &str = "http_proxy";
pub const HTTPS_PROXY_LOWER: &str = "https_proxy";
pub const NO_PROXY_LOWER: &str = "no_proxy";

/// The proxy settings, which Lima and Colima use to download VM images and (Lima's
/// `propagateProxyEnv`, on by default) copy into the guest, so that a VM behind a proxy can
/// install its packages.
pub const PROXIES: &[&str] = &[
    HTTP_PROXY,
    HTTPS_PROXY,
    NO_PROXY,
    HTTP_PROXY_LOWER,
    HTTPS_PROXY_LOWER,
    NO_PROXY_LOWER,
];

// Families passed on whole to the tool they belong to (see `process`).
pub const LIMA_ALL: &str = "LIMA_*";
pub const COLIMA_ALL: &str = "COLIMA_*";
pub const DOCKER_ALL: &str = "DOCKER_*";

/// Every variable above, with what it does (the README lists each).
pub const VARS: &[Var] = &[
    v(SBX_ALLOW, "more allowed hosts, comma-separated (`allow`)"),
    v(
        SBX_DEFAULT_ALLOWLIST,
        "`false` drops the built-in hosts (`default_allowlist`)",
    ),
    v(
        SBX_NETWORK,
        "an existing Docker network to attach to (`network`)",
    ),
    v(
        SBX_DOCKER_HOST,
        "the engine, before `DOCKER_HOST` (`docker_host`)",
    ),
    v(SBX_DNS, "upstream DNS servers, comma-separated (`dns`)"),
    v(SBX_CPUS, "CPUs of the agent's container (`resources.cpus`)"),
    v(SBX_MEMORY, "its memory, such as `4g` (`resources.memory`)"),
    v(SBX_PIDS, "its process limit (`resources.pids`)"),
    v(
        SBX_IMAGE_TAG,
        "the name for the sandbox image (`image.tag`)",
    ),
    v(SBX_IMAGE_BASE, "the base image (`image.base`)"),
    v(
        SBX_IMAGE_DOCKERFILE,
        "your own Dockerfile folder (`image.dockerfile`)",
    ),
    v(
        SBX_EXTRA_CA_CERTS,
        "PEM files the image trusts, comma-separated (`image.extra_ca_certs`)",
    ),
    v(SBX_CLAUDE_CONFIG, "`mount` or `none` (`claude.config`)"),
    v(SBX_TOKEN_STORE, "`auto` or `file` (`token_store`)"),
    v(SBX_GIT_MODE, "`isolated` or `worktree` (`git.mode`)"),
    v(SBX_VM_PROVIDER, "`lima` or `colima` (`vm.provider`)"),
    v(SBX_RECORD, "`false` keeps no terminal record (`record`)"),
    v(SBX_SPARE, "`false` starts no gate ahead (`spare`)"),
    v(
        SBX_CACHES,
        "`false` turns the package caches off (`caches`)",
    ),
    v(
        SBX_LOG,
        "sbx's own log on stderr, a `tracing` filter such as `sbx=debug` (default off)",
    ),
    v(SBX_NO_PROGRESS, "set: no progress bars"),
    v(
        SBX_TIMINGS,
        "`json`: `sbx run --timings` prints one JSON line",
    ),
    v(
        SBX_LIMA_HOME,
        "sbx's own Lima home for VM mode (default `~/.cache/sbx/lima`)",
    ),
    v(
        SBX_SSH_KEY,
        "the SSH key for an `ssh://` engine (default `~/.ssh/id_ed25519`, ...)",
    ),
    v(
        SBX_KEYRING_NAMESPACE,
        "keychain entries under `sbx-<value>` instead of `sbx` (tests)",
    ),
    v(
        SBX_NO_SECRET_SERVICE,
        "set: on Linux, kernel keyutils even when a Secret Service runs",
    ),
    v(NO_COLOR, "set and not empty: no colour"),
    v(
        TERM,
        "the terminal type the sandbox gets (default `xterm-256color`)",
    ),
    v(
        HOME,
        "your home: sbx's folders, `~/.claude`, `~/.ssh`, `~/.docker`",
    ),
    v(USER, "the user for an `ssh://` engine that names none"),
    v(LOGNAME, "passed to the programs sbx starts"),
    v(
        PATH,
        "where sbx finds `git`, `limactl`, `colima`; passed to them",
    ),
    v(
        TMPDIR,
        "temporary files, and a forwarded Docker socket when the session folder's path is too long",
    ),
    v(
        XDG_CONFIG_HOME,
        "sbx's config folder (`~/.config`), and Colima's and git's",
    ),
    v(
        XDG_CACHE_HOME,
        "sbx's cache: sessions, checkouts, VMs (`~/.cache`)",
    ),
    v(
        XDG_DATA_HOME,
        "sbx's data: project-file approvals (`~/.local/share`)",
    ),
    v(
        XDG_RUNTIME_DIR,
        "where a forwarded Docker socket goes before `TMPDIR`",
    ),
    v(
        DOCKER_HOST,
        "the engine, after `--docker-host` and `SBX_DOCKER_HOST`",
    ),
    v(
        DOCKER_CONTEXT,
        "the docker context naming the engine, else the current one",
    ),
    v(
        DOCKER_CONFIG,
        "where docker contexts are (default `~/.docker`)",
    ),
    v(
        LIMA_HOME,
        "your Lima home, only to point at a golden VM an older sbx left there",
    ),
    v(
        COLIMA_HOME,
        "your Colima home, whose Docker socket a container session may use",
    ),
    v(
        CLAUDE_CONFIG_DIR,
        "your Claude Code config folder (default `~/.claude`)",
    ),
    v(
        DBUS_SESSION_BUS_ADDRESS,
        "on Linux, a D-Bus session: tokens in the Secret Service",
    ),
    v(
        GH_TOKEN,
        "forwarded to sessions when no `github` token is stored",
    ),
    v(
        HTTP_PROXY,
        "passed to `limactl` and `colima`: downloads, and Lima gives it to VMs",
    ),
    v(HTTPS_PROXY, "the same, for HTTPS"),
    v(
        NO_PROXY,
        "hosts reached without the proxy, passed the same way",
    ),
    v(
        HTTP_PROXY_LOWER,
        "as `HTTP_PROXY` (tools read either spelling)",
    ),
    v(HTTPS_PROXY_LOWER, "as `HTTPS_PROXY`"),
    v(NO_PROXY_LOWER, "as `NO_PROXY`"),
    v(
        LIMA_ALL,
        "passed to `limactl` and `colima` (sbx sets `LIMA_HOME` itself)",
    ),
    v(
        COLIMA_ALL,
        "passed to `colima` (sbx sets `COLIMA_HOME` itself, drops `COLIMA_PROFILE`)",
    ),
    v(DOCKER_ALL, "passed to `docker` (`sbx bench` only)"),
];

const fn v(name: &'static str, about: &'static str) -> Var {
    Var { name, about }
}

/// The settings variables (the first block of [`VARS`]), for `config`.
pub const SETTINGS: &[&str] = &[
    SBX_ALLOW,
    SBX_DEFAULT_ALLOWLIST,
    SBX_NETWORK,
    SBX_DOCKER_HOST,
    SBX_DNS,
    SBX_CPUS,
    SBX_MEMORY,
    SBX_PIDS,
    SBX_IMAGE_TAG,
    SBX_IMAGE_BASE,
    SBX_IMAGE_DOCKERFILE,
    SBX_EXTRA_CA_CERTS,
    SBX_CLAUDE_CONFIG,
    SBX_TOKEN_STORE,
    SBX_GIT_MODE,
    SBX_VM_PROVIDER,
    SBX_RECORD,
    SBX_SPARE,
    SBX_CACHES,
];

fn named(name: &str) -> bool {
    VARS.iter().any(|v| v.name == name)
}

/// `name`'s value; `None` when unset or not UTF-8.
pub fn var(name: &str) -> Option<String> {
    debug_assert!(named(name), "`{name}` is not in `env::VARS`");
    std::env::var(name).ok()
}

/// `name`'s value; `None` when unset.
pub fn var_os(name: &str) -> Option<OsString> {
    debug_assert!(named(name), "`{name}` is not in `env::VARS`");
    std::env::var_os(name)
}

/// `name`'s value; `None` when unset or empty (most variables mean nothing when empty).
pub fn non_empty(name: &str) -> Option<OsString> {
    var_os(name).filter(|v| !v.is_empty())
}

/// The settings variables that are set, as `(name, value)` for `config` (a value that is not
/// UTF-8 is read lossily: it then fails as a setting with a message, not as a crash).
pub fn settings() -> Vec<(String, String)> {
    SETTINGS
        .iter()
        .filter_map(|&name| {
            let value = var_os(name)?;
            Some((name.to_owned(), value.to_string_lossy().into_owned()))
        })
        .collect()
}

/// The variables among `names` that are set, as `(name, value)`; a name ending in `*` stands for
/// every variable starting with what comes before (`LIMA_*`). For `process`, which passes them
/// on to the programs it starts.
pub fn passthrough(names: &[&str]) -> Vec<(OsString, OsString)> {
    let (families, single): (Vec<&str>, Vec<&str>) = names.iter().partition(|n| n.ends_with('*'));
    let mut out: Vec<(OsString, OsString)> = single
        .iter()
        .filter_map(|&n| Some((n.into(), var_os(n)?)))
        .collect();
    if !families.is_empty() {
        debug_assert!(families.iter().all(|f| named(f)), "{families:?}");
        let prefixes: Vec<&str> = families.iter().map(|f| f.trim_end_matches('*')).collect();
        out.extend(std::env::vars_os().filter(|(k, _)| {
            k.to_str()
                .is_some_and(|k| prefixes.iter().any(|p| k.starts_with(p)))
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's section lists every variable of [`VARS`], one `- `NAME`: ...` line each,
    /// and no other.
    #[test]
    fn the_readme_lists_every_variable() {
        let readme = include_str!("../README.md");
        let section = readme
            .split("\n## ")
            .find(|s| s.starts_with("Environment variables\n"))
            .expect("README.md has a section `## Environment variables`");
        let listed: Vec<&str> = section
            .lines()
            .filter_map(|l| l.strip_prefix("- `")?.split_once("`: ").map(|(n, _)| n))
            .collect();
        let missing: Vec<&str> = VARS
            .iter()
            .map(|v| v.name)
            .filter(|n| !listed.contains(n))
            .collect();
        assert!(missing.is_empty(), "README.md does not list {missing:?}");
        let unknown: Vec<&&str> = listed.iter().filter(|n| !named(n)).collect();
        assert!(
            unknown.is_empty(),
            "README.md lists {unknown:?}, which `VARS` does not"
        );
    }

    /// Every name this module defines is in the table (so in the README).
    #[test]
    fn every_constant_is_in_the_table() {
        let source = include_str!("env.rs");
        let unlisted: Vec<&str> = source
            .lines()
            .filter_map(|l| l.strip_prefix("pub const ")?.split_once(": &str = \""))
            .map(|(_, rest)| rest.trim_end_matches("\";"))
            .filter(|name| !named(name))
            .collect();
        assert!(unlisted.is_empty(), "not in `VARS`: {unlisted:?}");
    }

    #[test]
    fn names_are_unique_and_settings_are_listed() {
        let mut names: Vec<&str> = VARS.iter().map(|v| v.name).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "a variable is listed twice");
        assert!(SETTINGS.iter().all(|s| named(s) && s.starts_with("SBX_")));
    }

    /// Every read of the environment goes through this module, so that the table is complete.
    #[test]
    fn nothing_else_reads_the_environment() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut offenders = Vec::new();
        let mut dirs = vec![src.clone()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") && p != src.join("env.rs") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    for (i, line) in text.lines().enumerate() {
                        // `std::env::var`, `var_os`, `vars`, `vars_os`, and the crates'
                        // readers that take a name.
                        let reads = [
                            "std::env::var",
                            "use std::env",
                            "try_from_env(",
                            "from_default_env(",
                        ]
                        .iter()
                        .any(|pat| line.contains(pat));
                        if reads {
                            offenders.push(format!("{}:{}: {}", p.display(), i + 1, line.trim()));
                        }
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "read through `crate::env`:\n{}",
            offenders.join("\n")
        );
    }

    #[test]
    fn passthrough_takes_names_and_families() {
        // `PATH` is set wherever tests run; a family brings only its own members.
        let got = passthrough(&[PATH, LIMA_ALL]);
        assert!(got.iter().any(|(k, _)| k == PATH));
        assert!(
            got.iter()
                .all(|(k, _)| k == PATH || k.to_str().is_some_and(|k| k.starts_with("LIMA_")))
        );
        assert!(passthrough(&[SBX_KEYRING_NAMESPACE]).len() <= 1);
    }
}
