//! What every integration test goes through: a [`TestEnv`] (a private HOME, the environment sbx
//! runs with, and the removal of whatever the test made, even when it fails), the skips of tests
//! that need something the machine may lack ([`Need`], `needs!`, `needs_docker!`), the Docker
//! engine and the tests' own networks and hosts, and a terminal to run sbx on.

mod docker;
mod env;
mod terminal;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use docker::*;
pub use env::*;
pub use terminal::*;

/// Something a test needs from the machine. Without it the test prints one `skipping: <why>`
/// line and passes, unless the need's variable is `1`, which makes the skip a failure (CI sets
/// the ones its machine must meet; the README lists them).
#[derive(Clone, Copy, Debug)]
pub enum Need {
    /// A Docker engine that answers (`SBX_TEST_REQUIRE_DOCKER`).
    Docker,
    /// Running as root: to switch to a regular user (uid 1000, in the group of the Docker
    /// socket), or to see what sbx does as root (`SBX_TEST_REQUIRE_ROOT`).
    Root,
    /// util-linux `script`, which gives sbx a pseudo-terminal (`SBX_TEST_REQUIRE_TERMINAL`).
    Terminal,
    /// A tmpfs at `/dev/shm`, a filesystem other than the test's HOME
    /// (`SBX_TEST_REQUIRE_TMPFS`).
    Tmpfs,
    /// What the real-VM test needs: root, `qemu-system-x86_64`, its guest
    /// (`SBX_TEST_REQUIRE_QEMU`).
    Qemu,
    /// A Mac with Lima, to boot a real Lima VM (`SBX_TEST_REQUIRE_VM`).
    MacVm,
}

impl Need {
    /// The variable that turns this need's skip into a failure.
    pub fn variable(self) -> &'static str {
        match self {
            Need::Docker => "SBX_TEST_REQUIRE_DOCKER",
            Need::Root => "SBX_TEST_REQUIRE_ROOT",
            Need::Terminal => "SBX_TEST_REQUIRE_TERMINAL",
            Need::Tmpfs => "SBX_TEST_REQUIRE_TMPFS",
            Need::Qemu => "SBX_TEST_REQUIRE_QEMU",
            Need::MacVm => "SBX_TEST_REQUIRE_VM",
        }
    }

    /// What is missing, or `None` when this machine meets the need.
    pub fn missing(self) -> Option<&'static str> {
        let has = |program: &str, arg: &str| {
            Command::new(program)
                .arg(arg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        match self {
            Need::Docker => (!engine_answers()).then_some("no Docker engine is reachable"),
            Need::Root => (!is_root()).then_some("this process is not root"),
            Need::Terminal => {
                (!has("script", "--version")).then_some("util-linux `script` is not installed")
            }
            Need::Tmpfs => (!Path::new("/dev/shm").is_dir()).then_some("no /dev/shm (tmpfs) here"),
            Need::Qemu if !is_root() => {
                Some("this process is not root (the guest build, and limactl refuses root)")
            }
            Need::Qemu => (!has("qemu-system-x86_64", "--version"))
                .then_some("`qemu-system-x86_64` is not installed"),
            Need::MacVm if !cfg!(target_os = "macos") => Some("this is not macOS"),
            Need::MacVm => (!has("limactl", "--version")).then_some("limactl is not installed"),
        }
    }
}

/// Skips the rest of a test (or of a part of one) for `why`: prints `skipping: <why>`, or fails
/// when `need`'s variable is `1`.
#[track_caller]
pub fn skip(need: Need, why: &str) {
    let var = need.variable();
    if std::env::var(var).as_deref() == Ok("1") {
        panic!("{var}=1, but {why}");
    }
    eprintln!("skipping: {why}");
}

/// Whether this machine meets `need`; if not, [`skip`]s with what is missing and what for.
#[track_caller]
pub fn has(need: Need, what_for: &str) -> bool {
    match need.missing() {
        None => true,
        Some(missing) => {
            skip(need, &format!("{missing} ({what_for})"));
            false
        }
    }
}

/// `needs!(Root, "what for")`: returns from the test, after `skipping: <why>`, when this machine
/// lacks the [`Need`]; fails instead when the need's variable is `1`.
macro_rules! needs {
    ($need:ident, $what_for:expr) => {
        if !$crate::harness::has($crate::harness::Need::$need, $what_for) {
            return;
        }
    };
}

/// Returns from the test (see `needs!`) without a Docker engine; with one, builds sbx's images
/// once per test process (a fast no-op when they are current).
macro_rules! needs_docker {
    () => {
        needs!(Docker, "the test needs it and sbx's images");
        $crate::harness::ensure_images();
    };
}

/// Whether this process is root (and so can switch users, and runs sbx as root).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The `sbx` binary under test.
pub fn sbx_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sbx"))
}

/// The test doubles and stand-in guest images (`tests/support`).
pub fn support() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support")
}

/// `git args...` in `dir` as the test author; asserts success and returns its stdout.
#[track_caller]
pub fn git(dir: impl AsRef<Path>, args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> String {
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let out = Command::new("git")
        .args(["-c", "safe.directory=*", "-C"])
        .arg(dir.as_ref())
        .args(&args)
        .env("GIT_AUTHOR_NAME", "Test Author")
        .env("GIT_AUTHOR_EMAIL", "author@example.com")
        .env("GIT_COMMITTER_NAME", "Test Author")
        .env("GIT_COMMITTER_EMAIL", "author@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and shows both streams otherwise.
#[track_caller]
pub fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
}

/// Runs `cmd` to the end with `input` on its stdin, returning its output.
pub fn output_with_input(cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The command may be gone before it reads: a broken pipe here is its answer, not ours.
    let _ = std::io::Write::write_all(&mut stdin, input.as_bytes());
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// Polls `f` every 50 ms until it holds or `timeout` passes; whether it held.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Sends a signal to a process (`kill -SIG PID`).
#[track_caller]
pub fn send_signal(pid: u32, sig: i32) {
    let ok = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid} failed");
}

/// The probes tests run inside the sandbox (`tests/support/probes.py`).
pub const PROBES: &str = include_str!("../../support/probes.py");

/// `python3 -c` with the probes and then `body`.
pub fn python(body: &str) -> Vec<String> {
    vec!["python3".into(), "-c".into(), format!("{PROBES}\n{body}")]
}

/// The value of a `key=value` line of a probe's output.
#[track_caller]
pub fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no `{key}=` in:\n{out}"))
}

/// Asserts no file under `dir` (symlinks not followed) holds `secret`.
#[track_caller]
pub fn assert_no_file_holds(dir: impl AsRef<Path>, secret: &str) {
    let mut todo = vec![dir.as_ref().to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                todo.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(secret),
                    "{} holds the token",
                    p.display()
                );
            }
        }
    }
}
