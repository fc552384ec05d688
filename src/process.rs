//! The one place sbx starts external programs (git, limactl, colima): an explicit environment,
//! kill-on-drop, a timeout, captured output, and never a secret on a command line (secrets go in
//! on stdin).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

/// Variables that would make git look somewhere other than where sbx points it.
const GIT_REDIRECTS: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
];

#[derive(Debug, Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    cwd: Option<PathBuf>,
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
            env: vec![("LC_ALL".into(), "C".into())],
            env_remove: Vec::new(),
            stdin: None,
            timeout: Duration::from_secs(120),
        }
    }

    /// `git`, with the variables that would redirect it removed and prompts turned off.
    pub fn git(repo: &Path) -> Self {
        let mut c = Self::new("git").arg("-C").arg(repo);
        c.env_remove = GIT_REDIRECTS.iter().map(|v| (*v).into()).collect();
        c.env("GIT_TERMINAL_PROMPT", "0")
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

    fn command(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.program);
        c.args(&self.args)
            .kill_on_drop(true)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        for k in &self.env_remove {
            c.env_remove(k);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        if let Some(d) = &self.cwd {
            c.current_dir(d);
        }
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
/// own background helpers; a failure to start is only a missed optimisation.
pub fn spawn_detached(program: &Path, args: &[String]) {
    use std::os::unix::process::CommandExt;
    let mut c = std::process::Command::new(program);
    c.args(args)
        .stdin(Stdio::null())
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
}
