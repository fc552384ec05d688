//! The one place sbx starts external programs (git, limactl, colima, sbx's own helpers): an
//! explicit environment, kill-on-drop, a timeout, captured output, and never a secret on a
//! command line (secrets go in on stdin).
//!
//! **The environment starts empty.** Every program gets [`BASE`] from sbx's own environment
//! (where programs are, who and where the user is, where temporary files go) and `LC_ALL=C`, so
//! the messages sbx reads stay in one language. A caller adds what its tool needs by name with
//! [`Cmd::inherit`]: for a tool with variables of its own, their whole family (`LIMA_*` for
//! `limactl`, `COLIMA_*` for `colima`), since a user may configure the tool with them; the
//! proxy settings for the tools that download (Lima and Colima). A tool's test double names its
//! own knobs inside that family (`LIMA_TEST_*`, `COLIMA_TEST_*`), so a test reaches the double
//! through sbx the way a user's settings reach the real tool, and sbx holds nothing for tests. Everything else stays behind, notably:
//! - the user's `GIT_*`: `GIT_DIR`, `GIT_WORK_TREE`, `GIT_INDEX_FILE`, `GIT_CONFIG_PARAMETERS`
//!   and the like would point sbx's git at another repository, index or configuration;
//! - `SSH_AUTH_SOCK`: a VM that forwarded it would hand the user's SSH keys to the sandbox;
//! - tokens (`GH_TOKEN`, ...) and `DOCKER_HOST`: no tool of a session needs them, and a leaked
//!   variable is one more place a secret or an endpoint could travel.
//!
//! sbx's own helpers ([`Cmd::sbx`], [`spawn_detached`]) get every variable sbx reads
//! ([`crate::env::VARS`]), so they behave as the sbx that started them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::env;

/// What every program gets from sbx's environment, when set: `PATH`; `HOME`, `USER` and
/// `LOGNAME` (git, Lima and Colima find the user's files and name by them); the XDG base
/// folders, which say where a program keeps its files just as `HOME` does (git's config,
/// Colima's home, Lima's download cache); and `TMPDIR`.
pub const BASE: &[&str] = &[
    env::PATH,
    env::HOME,
    env::USER,
    env::LOGNAME,
    env::TMPDIR,
    env::XDG_CONFIG_HOME,
    env::XDG_CACHE_HOME,
    env::XDG_DATA_HOME,
];

#[derive(Debug, Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    cwd: Option<PathBuf>,
    /// Variables (or `NAME_*` families) passed on from sbx's environment beyond [`BASE`].
    inherit: Vec<&'static str>,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

#[derive(Debug)]
pub struct Output {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.status == 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("`{program}` is not installed or not on `PATH`")]
    NotFound { program: String },
    #[error("cannot run `{program}`")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` did not finish within {secs} s")]
    Timeout { command: String, secs: u64 },
    #[error("`{command}` failed (exit code {status}): {stderr}")]
    Failed {
        command: String,
        status: i32,
        stderr: String,
    },
}

impl Cmd {
    pub fn new(program: impl Into<OsString>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            cwd: None,
            inherit: Vec::new(),
            env: vec![("LC_ALL".into(), "C".into())],
            env_remove: Vec::new(),
            stdin: None,
            timeout: Duration::from_secs(120),
        }
    }

    /// `git` in `repo`, with prompts turned off. No `GIT_*` of the user's reaches it (see the
    /// module comment).
    pub fn git(repo: &Path) -> Self {
        Self::new("git")
            .arg("-C")
            .arg(repo)
            .env("GIT_TERMINAL_PROMPT", "0")
    }

    /// sbx itself (`exe`, the running binary): a helper, or `sbx bench`'s sessions. It gets every
    /// variable sbx reads, so that it finds the same folders, engine and settings.
    pub fn sbx(exe: impl Into<OsString>) -> Self {
        let mut c = Self::new(exe);
        c.inherit = env::VARS.iter().map(|v| v.name).collect();
        c
    }

    /// Also passes on sbx's own value of each of `names` (when set); a name ending in `*` is a
    /// family (`LIMA_*`). Every name is one of [`crate::env::VARS`].
    pub fn inherit(mut self, names: &[&'static str]) -> Self {
        self.inherit.extend_from_slice(names);
        self
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, a: I) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn env_remove(mut self, k: impl Into<OsString>) -> Self {
        self.env_remove.push(k.into());
        self
    }

    /// The program's environment: [`BASE`] and the inherited variables from sbx's, less the
    /// removed ones, then the ones set (later entries win).
    fn environment(&self) -> Vec<(OsString, OsString)> {
        let names: Vec<&str> = BASE.iter().chain(&self.inherit).copied().collect();
        let mut vars = env::passthrough(&names);
        vars.retain(|(k, _)| !self.env_remove.contains(k));
        vars.extend(self.env.iter().cloned());
        vars
    }

    /// Bytes written to the program's stdin (how secrets reach a program).
    pub fn stdin(mut self, bytes: Vec<u8>) -> Self {
        self.stdin = Some(bytes);
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// The command line for messages (arguments never carry secrets).
    pub fn display(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A `std` command with this program, arguments, folder and environment, for a caller that
    /// needs what [`Cmd::output`] does not give (a child's resource usage, a conversation over
    /// its pipes). The caller sets up its streams; it is not killed on drop.
    pub fn std_command(&self) -> std::process::Command {
        // sbx's one `Command::new` (`clippy.toml` forbids it everywhere else), so that every
        // program it starts gets the environment above and nothing more.
        #[allow(clippy::disallowed_methods)]
        let mut c = std::process::Command::new(&self.program);
        c.args(&self.args).env_clear().envs(self.environment());
        if let Some(d) = &self.cwd {
            c.current_dir(d);
        }
        c
    }

    fn command(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::from(self.std_command());
        c.kill_on_drop(true)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        c
    }

    /// Runs to completion and returns the output whatever the exit code.
    pub async fn output(&self) -> Result<Output, ProcessError> {
        let program = self.program.to_string_lossy().into_owned();
        let mut child = self.command().spawn().map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ProcessError::NotFound {
                    program: program.clone(),
                }
            } else {
                ProcessError::Spawn {
                    program: program.clone(),
                    source,
                }
            }
        })?;
        if let (Some(bytes), Some(mut pipe)) = (&self.stdin, child.stdin.take()) {
            // A program that exits without reading its stdin is not an error here.
            let _ = pipe.write_all(bytes).await;
            drop(pipe);
        }
        let out = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| ProcessError::Timeout {
                command: self.display(),
                secs: self.timeout.as_secs(),
            })?
            .map_err(|source| ProcessError::Spawn { program, source })?;
        Ok(Output {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// [`Cmd::output`] for a plain thread (one outside any async runtime), on a small runtime of
    /// its own.
    pub fn output_blocking(&self) -> Result<Output, ProcessError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| ProcessError::Spawn {
                program: self.program.to_string_lossy().into_owned(),
                source,
            })?;
        rt.block_on(self.output())
    }

    /// Runs and fails on a non-zero exit, returning stdout.
    pub async fn run(&self) -> Result<String, ProcessError> {
        let out = self.output().await?;
        if out.ok() {
            Ok(out.stdout)
        } else {
            Err(ProcessError::Failed {
                command: self.display(),
                status: out.status,
                stderr: out.stderr.trim().to_owned(),
            })
        }
    }
}

/// Starts a program that outlives sbx: no terminal (all three streams on `/dev/null`), a session
/// of its own (so the terminal's Ctrl-C and hang-up never reach it), not waited for. For sbx's
/// own background helpers (so with [`Cmd::sbx`]'s environment); a failure to start is only a
/// missed optimisation.
pub fn spawn_detached(program: &Path, args: &[String]) {
    use std::os::unix::process::CommandExt;
    let mut c = Cmd::sbx(program).args(args).std_command();
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: `setsid` is async-signal-safe and touches no memory of the parent.
    unsafe {
        c.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    if let Ok(child) = c.spawn() {
        // Reaped by init once sbx exits; dropping the handle does not kill it.
        drop(child);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_captures_and_times_out() {
        let out = Cmd::new("sh")
            .args(["-c", "cat; echo err >&2; exit 3"])
            .stdin(b"in".to_vec())
            .output()
            .await
            .unwrap();
        assert_eq!(
            (out.status, out.stdout.as_str(), out.stderr.as_str()),
            (3, "in", "err\n")
        );
        let e = Cmd::new("sleep")
            .arg("5")
            .timeout(Duration::from_millis(100))
            .run()
            .await
            .unwrap_err();
        assert!(matches!(e, ProcessError::Timeout { .. }), "{e}");
        let e = Cmd::new("sbx-no-such-program").run().await.unwrap_err();
        assert!(e.to_string().contains("not installed"), "{e}");
    }

    /// The child sees the allowlist and what the caller set, nothing else of sbx's environment
    /// (a test runs with cargo's `CARGO_*` variables, which must not pass).
    #[tokio::test]
    async fn the_environment_is_the_allowlist() {
        let names = |c: Cmd| async move {
            let out = c.args(["-c", "env"]).run().await.unwrap();
            out.lines()
                .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_owned()))
                // What the shell sets itself.
                .filter(|k| !["PWD", "SHLVL", "_", "OLDPWD"].contains(&k.as_str()))
                .collect::<Vec<_>>()
        };
        let got = names(Cmd::new("sh").env("SBX_X", "1")).await;
        assert!(got.iter().any(|k| k == "PATH"), "{got:?}");
        for k in &got {
            assert!(
                BASE.contains(&k.as_str()) || k == "LC_ALL" || k == "SBX_X",
                "`{k}` reached the child: {got:?}"
            );
        }
        let got = names(Cmd::new("sh").env_remove(env::PATH)).await;
        assert!(!got.iter().any(|k| k == "PATH"), "{got:?}");
        // `git`'s environment, seen by `sh`.
        let mut git = Cmd::git(Path::new("/"));
        (git.program, git.args) = ("sh".into(), Vec::new());
        let got = names(git).await;
        assert!(
            got.iter()
                .filter(|k| k.starts_with("GIT_"))
                .all(|k| k == "GIT_TERMINAL_PROMPT"),
            "{got:?}"
        );
    }
}
