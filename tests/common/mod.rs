//! Shared helpers for the integration tests: a private HOME per test, real git repositories,
//! the `sbx` binary, the Docker engine (skip or fail when absent), and test hosts on the tests'
//! own networks, all labelled and removed by guards even when a test fails.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const TEST_LABEL: &str = "dev.sbx.test=1";

/// Whether a Docker engine answers. Without one, a test prints `skipping: ...` and returns,
/// unless `SBX_TEST_REQUIRE_DOCKER=1` (set by CI), which turns the skip into a failure.
pub fn docker_available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    let ok = *OK.get_or_init(|| {
        Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    });
    if !ok {
        if std::env::var("SBX_TEST_REQUIRE_DOCKER").as_deref() == Ok("1") {
            panic!("no Docker engine is reachable and SBX_TEST_REQUIRE_DOCKER=1");
        }
        eprintln!("skipping: no Docker engine is reachable");
    }
    ok
}

/// `return` from the test when Docker is unavailable (after printing why).
#[macro_export]
macro_rules! require_docker {
    () => {
        if !common::docker_available() {
            return;
        }
    };
}

pub fn sbx_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sbx"))
}

/// A private HOME with XDG folders, so tests never touch the user's files or each other's.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("sbx-test-")
            .tempdir()
            .unwrap();
        // The identity a developer has; sbx hands it to git inside the sandbox.
        std::fs::write(
            dir.path().join(".gitconfig"),
            "[user]\n\tname = Test Author\n\temail = author@example.com\n[safe]\n\tdirectory = *\n",
        )
        .unwrap();
        Env { dir }
    }

    /// `sbx args...` run as a regular user (uid/gid 1000, in the group of the Docker socket),
    /// with this HOME handed to that user. `None` when this process cannot switch users (not
    /// root).
    pub fn run_as_user(&self, cwd: &Path, args: &[&str]) -> Option<Output> {
        self.run_as_user_with(cwd, args, &[], None)
    }

    /// [`Env::run_as_user`] with extra environment and an optional stdin.
    pub fn run_as_user_with(
        &self,
        cwd: &Path,
        args: &[&str],
        extra_env: &[(&str, &str)],
        stdin: Option<&str>,
    ) -> Option<Output> {
        let mut c = self.user_command(cwd, args)?;
        c.envs(extra_env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            use std::io::Write;
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        Some(child.wait_with_output().unwrap())
    }

    /// The command [`Env::run_as_user`] runs (`sbx args...` as uid/gid 1000 in the `docker`
    /// group, this HOME handed to that user), to spawn it yourself. `None` when not root.
    pub fn user_command(&self, cwd: &Path, args: &[&str]) -> Option<Command> {
        let mut c = self.sbx_as_user()?;
        c.args(args).current_dir(cwd);
        Some(c)
    }

    /// `sbx` as the regular user (see [`Env::run_as_user`]), to add arguments to; this HOME is
    /// handed to that user first. `None` when this process is not root.
    pub fn sbx_as_user(&self) -> Option<Command> {
        if !Env::is_root() {
            return None;
        }
        let gid = std::fs::metadata("/var/run/docker.sock")
            .map(|m| std::os::unix::fs::MetadataExt::gid(&m))
            .unwrap_or(0);
        let status = Command::new("chown")
            .args(["-R", "1000:1000"])
            .arg(self.home())
            .status()
            .unwrap();
        assert!(status.success());
        let inner = self.sbx();
        let mut c = Command::new("setpriv");
        c.args(["--reuid=1000", "--regid=1000"])
            .arg(format!("--groups={gid}"))
            .arg(sbx_bin())
            .env_clear()
            .envs(
                inner
                    .get_envs()
                    .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))),
            );
        Some(c)
    }

    /// Whether this process is root (and so can switch users for a test).
    pub fn is_root() -> bool {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout == b"0\n")
    }

    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    pub fn cache(&self) -> PathBuf {
        self.home().join(".cache")
    }

    pub fn sessions(&self) -> PathBuf {
        self.cache().join("sbx/sessions")
    }

    pub fn config_dir(&self) -> PathBuf {
        self.home().join(".config/sbx")
    }

    /// `sbx` with this environment. The CA bundle setting passes through (CI's TLS proxy).
    pub fn sbx(&self) -> Command {
        let mut c = Command::new(sbx_bin());
        c.env_clear()
            .env("HOME", self.home())
            .env("XDG_CACHE_HOME", self.cache())
            .env("XDG_CONFIG_HOME", self.home().join(".config"))
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SBX_NO_PROGRESS", "1")
            // No gate started ahead, whose helper outlives the test's HOME; the tests of that
            // turn it on.
            .env("SBX_SPARE", "false");
        for v in ["DOCKER_HOST", "SBX_EXTRA_CA_CERTS", "SBX_IMAGE_BASE"] {
            if let Ok(x) = std::env::var(v) {
                c.env(v, x);
            }
        }
        c
    }

    /// Runs `sbx args...` in `cwd` with no stdin, returning its output.
    pub fn run(&self, cwd: &Path, args: &[&str]) -> Output {
        self.sbx()
            .current_dir(cwd)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Makes a git repository with one commit under this HOME.
    pub fn repo(&self, name: &str) -> PathBuf {
        let p = self.home().join("code").join(name);
        std::fs::create_dir_all(&p).unwrap();
        git(&p, &["init", "-q", "-b", "main"]);
        std::fs::write(p.join("README.md"), format!("# {name}\n")).unwrap();
        git(&p, &["add", "."]);
        git(&p, &["commit", "-q", "-m", "first"]);
        p
    }
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "safe.directory=*", "-C"])
        .arg(dir)
        .args(args)
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

/// Builds the images once per test process (a fast no-op when they are current).
pub fn ensure_images() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let env = Env::new();
        let o = env.run(env.home(), &["setup"]);
        assert_ok(&o);
    });
}

/// Removes every name in an image repository (`sbxtest-early`: its alias and fingerprint tags),
/// so an image only this repository named goes, and one that other names share stays.
pub fn remove_repo(repo: &str) {
    let names = stdout(&docker(&[
        "images",
        repo,
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ]));
    for n in names.lines().filter(|n| !n.is_empty()) {
        let _ = docker(&["rmi", n]);
    }
}

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().unwrap()
}

#[track_caller]
pub fn docker_ok(args: &[&str]) -> String {
    let o = docker(args);
    assert!(
        o.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(&o).trim().to_owned()
}

/// Names of containers (any state) carrying a session's label.
pub fn session_containers(session: &str) -> Vec<String> {
    let out = docker_ok(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=dev.sbx.session={session}"),
        "--format",
        "{{.Names}}",
    ]);
    out.lines().map(str::to_owned).collect()
}

pub fn session_networks(session: &str) -> Vec<String> {
    let out = docker_ok(&[
        "network",
        "ls",
        "--filter",
        &format!("label=dev.sbx.session={session}"),
        "--format",
        "{{.Name}}",
    ]);
    out.lines().map(str::to_owned).collect()
}

/// The ids of the sessions recorded under this HOME.
pub fn session_ids(env: &Env) -> Vec<String> {
    std::fs::read_dir(env.sessions())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

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

fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "sbxtest-{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}

/// A Docker network of the test's own, removed (with its containers) on drop.
pub struct TestNet {
    pub name: String,
    containers: Vec<String>,
}

impl TestNet {
    pub fn new(extra: &[&str]) -> TestNet {
        let name = unique("net");
        let mut args = vec!["network", "create", "--label", TEST_LABEL];
        args.extend_from_slice(extra);
        args.push(&name);
        docker_ok(&args);
        TestNet {
            name,
            containers: Vec::new(),
        }
    }

    /// A test host: `image cmd...` as root with these network aliases. Returns its name.
    pub fn host(&mut self, aliases: &[&str], image: &str, cmd: &[&str]) -> String {
        let name = unique("host");
        let mut args = vec![
            "run",
            "-d",
            "--rm",
            "--label",
            TEST_LABEL,
            "--name",
            &name,
            "--network",
            &self.name,
            "--user",
            "0",
        ];
        for a in aliases {
            args.push("--network-alias");
            args.push(a);
        }
        args.push(image);
        args.extend_from_slice(cmd);
        docker_ok(&args);
        self.containers.push(name.clone());
        name
    }

    /// Removes this container with the network.
    pub fn adopt(&mut self, container: &str) {
        self.containers.push(container.to_owned());
    }

    /// A web server answering `hello from <alias>` on port 80.
    pub fn web_host(&mut self, alias: &str) -> String {
        let script = format!(
            "mkdir -p /srv && echo 'hello from {alias}' > /srv/index.html && cd /srv && exec python3 -m http.server --bind :: 80"
        );
        let name = self.host(&[alias], "sbx-sandbox:latest", &["sh", "-c", &script]);
        let ok = wait_until(Duration::from_secs(15), || {
            docker(&[
                "exec",
                &name,
                "python3",
                "-c",
                "import urllib.request;urllib.request.urlopen('http://127.0.0.1/')",
            ])
            .status
            .success()
        });
        assert!(ok, "test web host {alias} did not come up");
        name
    }

    pub fn ip(&self, container: &str, v6: bool) -> String {
        let field = if v6 { "GlobalIPv6Address" } else { "IPAddress" };
        docker_ok(&[
            "inspect",
            "-f",
            &format!(
                "{{{{(index .NetworkSettings.Networks \"{}\").{field}}}}}",
                self.name
            ),
            container,
        ])
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        // Sessions attached with `--network` are gone by now; anything left is force-removed.
        let _ = docker(&["network", "rm", &self.name]);
    }
}

/// Removes whatever a test's sessions left behind, even when the test panics.
pub struct SessionGuard<'a> {
    pub env: &'a Env,
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        // The package caches this HOME's sessions made.
        let _ = self.env.run(self.env.home(), &["cache", "rm", "--all"]);
        // Gates started ahead for a next session (`SBX_SPARE=true`).
        for e in std::fs::read_dir(self.env.cache().join("sbx/spares"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let id = e.file_name().to_string_lossy().into_owned();
            let _ = docker(&["rm", "-f", &format!("sbx-{id}-gate")]);
        }
        for id in session_ids(self.env) {
            for c in session_containers(&id) {
                let _ = docker(&["rm", "-f", &c]);
            }
            for n in session_networks(&id) {
                let _ = docker(&["network", "rm", &n]);
            }
        }
    }
}

/// Starts a session in the background (`cmd` is an `sbx run ...` command) and waits until its
/// agent container answers `probe` (run there with `docker exec`). Returns the child, whose
/// stdout and stderr are piped, and the session id.
pub fn spawn_session(env: &Env, mut cmd: Command, probe: &[&str]) -> (std::process::Child, String) {
    let before = session_ids(env);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut id = String::new();
    let mut exited = false;
    let ready = wait_until(Duration::from_secs(90), || {
        if child.try_wait().unwrap().is_some() {
            exited = true;
            return true;
        }
        id = session_ids(env)
            .into_iter()
            .find(|i| !before.contains(i))
            .unwrap_or_default();
        if id.is_empty() {
            return false;
        }
        let mut args = vec!["exec".to_owned(), format!("sbx-{id}-agent")];
        args.extend(probe.iter().map(|s| (*s).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&args).status.success()
    });
    if exited {
        let o = child.wait_with_output().unwrap();
        panic!(
            "the session ended before `{}`: exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            probe.join(" "),
            o.status.code(),
            stdout(&o),
            stderr(&o)
        );
    }
    assert!(ready, "the session never got to `{}`", probe.join(" "));
    (child, id)
}

/// Sends a signal to a process (`kill -SIG PID`).
pub fn send_signal(pid: u32, sig: i32) {
    let ok = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid} failed");
}

/// The probes tests run inside the sandbox (`tests/support/probes.py`).
pub const PROBES: &str = include_str!("../support/probes.py");

/// `python3 -c` with the probes and then `body`.
pub fn python(body: &str) -> Vec<String> {
    vec!["python3".into(), "-c".into(), format!("{PROBES}\n{body}")]
}

/// The value of a `key=value` line of a probe's output.
pub fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no `{key}=` in:\n{out}"))
}

/// `sbx run --network NET --allow ... -- CMD`.
pub fn network_run_args(net: &TestNet, allow: &[&str], cmd: Vec<String>) -> Vec<String> {
    let mut args: Vec<String> = vec!["run".into(), "--network".into(), net.name.clone()];
    for a in allow {
        args.push("--allow".into());
        args.push((*a).into());
    }
    args.push("--".into());
    args.extend(cmd);
    args
}

/// Asserts no file under `dir` (symlinks not followed) holds `secret`.
#[track_caller]
pub fn assert_no_file_holds(dir: &Path, secret: &str) {
    let mut todo = vec![dir.to_owned()];
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

/// Asserts there is exactly one session under this HOME and returns its id.
#[track_caller]
pub fn only_session(env: &Env) -> String {
    let ids = session_ids(env);
    assert_eq!(ids.len(), 1, "sessions: {ids:?}");
    ids[0].clone()
}

/// The test doubles and stand-in guest images (`tests/support`).
pub fn support() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support")
}

/// The stand-in guests: `sbxtest-guest-bare` is a fresh cloud image as far as sbx can tell (no
/// Docker, the login user made at boot and not in the `docker` group); `sbxtest-guest` has
/// Docker installed, as a remote Docker host or Colima's image does.
pub fn build_guest_images() {
    for (tag, dir) in [
        ("sbxtest-guest-bare:latest", "guest"),
        ("sbxtest-guest:latest", "guest-docker"),
    ] {
        docker_ok(&[
            "build",
            "-q",
            "-t",
            tag,
            support().join(dir).to_str().unwrap(),
        ]);
    }
}

/// Removes, when dropped, the stand-in guests (containers named with `prefix`) and the disks the
/// `limactl` double kept for them.
pub struct GuestCleanup {
    pub prefix: String,
}

impl Drop for GuestCleanup {
    fn drop(&mut self) {
        let names = docker_ok(&[
            "ps",
            "-a",
            "--filter",
            &format!("name={}", self.prefix),
            "--format",
            "{{.Names}}",
        ]);
        for n in names.lines() {
            let _ = docker(&["rm", "-f", n]);
        }
        let disks = docker_ok(&[
            "images",
            "limatest-disk",
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ]);
        for d in disks.lines().filter(|d| d.contains(&self.prefix)) {
            let _ = docker(&["rmi", "-f", d]);
        }
    }
}

/// Runs `sbx ARGS` (a shell-quoted string) in a pseudo-terminal of `cols` x `rows` made by
/// `script`, with this environment (progress bars on) plus `extra`, and `input` as the keys
/// typed. Returns what
/// the terminal received and the exit code.
pub fn in_terminal(
    env: &Env,
    cwd: &Path,
    args: &str,
    (cols, rows): (u16, u16),
    extra: &[(&str, &str)],
    input: &[u8],
) -> (Vec<u8>, Option<i32>) {
    use std::io::Write;
    let cmd = format!(
        "stty cols {cols} rows {rows}; exec {} {args}",
        sbx_bin().display()
    );
    let c = env.sbx();
    let mut child = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .env_clear()
        .envs(
            c.get_envs()
                .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))),
        )
        .env("TERM", "xterm-256color")
        // A terminal is where a person sees progress bars.
        .env_remove("SBX_NO_PROGRESS")
        .envs(extra.iter().copied())
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Typed after a pause, as a person would (what is typed early may reach no one).
    std::thread::spawn(move || {
        for chunk in input.split_inclusive(|b| *b == b'\r') {
            std::thread::sleep(Duration::from_secs(3));
            let _ = stdin.write_all(chunk);
            let _ = stdin.flush();
        }
        std::thread::sleep(Duration::from_secs(120));
    });
    let o = child.wait_with_output().unwrap();
    (o.stdout, o.status.code())
}

/// The rows of a terminal of `cols` x `rows` after it received `bytes`, trailing spaces cut.
pub fn screen_rows(bytes: &[u8], (cols, rows): (u16, u16)) -> Vec<String> {
    let nz = |n: u16| std::num::NonZero::new(n).expect("a terminal has rows and columns");
    let mut p = vt100::Parser::new(nz(rows), nz(cols), 0);
    p.process(bytes);
    p.screen()
        .rows(0, cols)
        .map(|r| r.trim_end().to_owned())
        .collect()
}

/// A DNS server of the test's own (dnsmasq) that logs every query it receives and answers
/// from a hosts file the test can rewrite.
pub fn dns_server(
    net: &mut TestNet,
    env: &Env,
    hosts: &str,
) -> (String, String, std::path::PathBuf) {
    let dir = env.home().join("dns");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("hosts");
    std::fs::write(&file, hosts).unwrap();
    let mount = format!("{}:/dns:ro", dir.display());
    let name = format!("{}-dns", net.name);
    docker_ok(&[
        "run",
        "-d",
        "--rm",
        "--label",
        TEST_LABEL,
        "--name",
        &name,
        "--network",
        &net.name,
        "--user",
        "0",
        "-v",
        &mount,
        "sbx-gate:latest",
        "dnsmasq",
        "-k",
        "--user=root",
        "--group=",
        "--no-resolv",
        "--no-hosts",
        "--addn-hosts=/dns/hosts",
        "--local-ttl=0",
        "--log-queries",
        "--log-facility=-",
    ]);
    net.adopt(&name);
    let ip = net.ip(&name, false);
    (name, ip, file)
}

pub fn dns_log(name: &str) -> String {
    stderr(&docker(&["logs", name]))
}
