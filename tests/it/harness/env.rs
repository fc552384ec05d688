//! [`TestEnv`]: one test's private HOME, the environment sbx runs with there, and everything the
//! test made, removed when it is dropped.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::*;

/// Who runs sbx in a test: this process (root in CI), or a regular user (uid/gid 1000, in the
/// group of the Docker socket), which only root can switch to (check [`Need::Root`] first).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum As {
    Root,
    User,
}

impl std::fmt::Display for As {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            As::Root => "root",
            As::User => "user",
        })
    }
}

/// One test's world: a private HOME with XDG folders (so tests never touch the user's files or
/// each other's), the environment every `sbx` it runs gets (nothing else of this process's
/// passes, but the engine and CA settings), and what it made. Dropped, it removes its sessions'
/// containers, networks, spare gates and package caches, then the test hosts, networks, stand-in
/// guests and images it was given, even when the test failed.
pub struct TestEnv {
    dir: tempfile::TempDir,
    vars: BTreeMap<OsString, OsString>,
    made: RefCell<Made>,
}

/// What a test made beyond its sessions, to remove at the end.
#[derive(Default)]
struct Made {
    /// Run first, in reverse order (e.g. stopping processes the test started).
    hooks: Vec<Box<dyn FnOnce()>>,
    containers: Vec<String>,
    networks: Vec<String>,
    /// Name prefixes of stand-in guests (containers) and of the `limactl` double's disks.
    guests: Vec<String>,
    /// Image repositories, every name in them.
    image_repos: Vec<String>,
}

impl TestEnv {
    pub fn new() -> TestEnv {
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
        let home = dir.path();
        let mut vars: BTreeMap<OsString, OsString> = [
            ("HOME", home.as_os_str().to_owned()),
            ("XDG_CACHE_HOME", home.join(".cache").into()),
            ("XDG_CONFIG_HOME", home.join(".config").into()),
            ("PATH", std::env::var_os("PATH").unwrap_or_default()),
            ("SBX_NO_PROGRESS", "1".into()),
            // No gate started ahead, whose helper outlives the test's HOME; the tests of that
            // turn it on.
            ("SBX_SPARE", "false".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v))
        .collect();
        // The engine to use, and the CA bundle CI's TLS proxy needs.
        for v in ["DOCKER_HOST", "SBX_EXTRA_CA_CERTS", "SBX_IMAGE_BASE"] {
            if let Some(x) = std::env::var_os(v) {
                vars.insert(v.into(), x);
            }
        }
        // The tool doubles' engine: sbx passes `DOCKER_HOST` to no tool, but `LIMA_*` to
        // limactl and colima (`tests/support/limactl`).
        if let Some(x) = std::env::var_os("DOCKER_HOST") {
            vars.insert("LIMA_TEST_DOCKER_HOST".into(), x);
        }
        TestEnv {
            dir,
            vars,
            made: RefCell::default(),
        }
    }

    /// Sets a variable for every `sbx` this test runs from now on (and for the cleanup's).
    pub fn set(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) {
        self.vars
            .insert(key.as_ref().to_owned(), value.as_ref().to_owned());
    }

    /// Puts the test doubles (`tests/support`: `limactl`, `colima`) first on sbx's `PATH`.
    pub fn use_doubles(&mut self) {
        let mut path = support().into_os_string();
        path.push(":");
        path.push(&self.vars[OsStr::new("PATH")]);
        self.set("PATH", path);
    }

    /// The environment `sbx` runs with.
    pub fn vars(&self) -> impl Iterator<Item = (&OsStr, &OsStr)> {
        self.vars
            .iter()
            .map(|(k, v)| (k.as_os_str(), v.as_os_str()))
    }

    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    /// `XDG_CACHE_HOME` as sbx sees it (`~/.cache` unless the test set another).
    pub fn cache(&self) -> PathBuf {
        PathBuf::from(&self.vars[OsStr::new("XDG_CACHE_HOME")])
    }

    pub fn sessions(&self) -> PathBuf {
        self.cache().join("sbx/sessions")
    }

    pub fn config_dir(&self) -> PathBuf {
        self.home().join(".config/sbx")
    }

    /// `sbx` as this process, with this environment, to add arguments to.
    pub fn sbx(&self) -> Command {
        let mut c = Command::new(sbx_bin());
        c.env_clear().envs(self.vars());
        c
    }

    /// `sbx` as `who` (see [`As`]). For the regular user, this HOME is handed to that user
    /// first, so make it just before use.
    #[track_caller]
    pub fn sbx_as(&self, who: As) -> Command {
        match who {
            As::Root => self.sbx(),
            As::User => {
                assert!(
                    is_root(),
                    "switching users needs root: check `Need::Root` first"
                );
                self.give_home_to_user();
                let gid = std::fs::metadata("/var/run/docker.sock")
                    .map(|m| std::os::unix::fs::MetadataExt::gid(&m))
                    .unwrap_or(0);
                let mut c = Command::new("setpriv");
                c.args(["--reuid=1000", "--regid=1000"])
                    .arg(format!("--groups={gid}"))
                    .arg(sbx_bin())
                    .env_clear()
                    .envs(self.vars());
                c
            }
        }
    }

    /// Makes everything under this HOME the regular user's (uid/gid 1000).
    #[track_caller]
    pub fn give_home_to_user(&self) {
        let status = Command::new("chown")
            .args(["-R", "1000:1000"])
            .arg(self.home())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// `sbx args...` as `who` in `cwd`, to spawn or run.
    #[track_caller]
    pub fn command_as(
        &self,
        who: As,
        cwd: impl AsRef<Path>,
        args: impl IntoIterator<Item = impl AsRef<OsStr>>,
    ) -> Command {
        let mut c = self.sbx_as(who);
        c.current_dir(cwd).args(args);
        c
    }

    /// Runs `sbx args...` in `cwd` with no stdin, returning its output.
    pub fn run(
        &self,
        cwd: impl AsRef<Path>,
        args: impl IntoIterator<Item = impl AsRef<OsStr>>,
    ) -> Output {
        self.run_as(As::Root, cwd, args)
    }

    /// [`TestEnv::run`] as `who`.
    #[track_caller]
    pub fn run_as(
        &self,
        who: As,
        cwd: impl AsRef<Path>,
        args: impl IntoIterator<Item = impl AsRef<OsStr>>,
    ) -> Output {
        self.command_as(who, cwd, args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// [`TestEnv::run`] as the regular user.
    #[track_caller]
    pub fn run_as_user(
        &self,
        cwd: impl AsRef<Path>,
        args: impl IntoIterator<Item = impl AsRef<OsStr>>,
    ) -> Output {
        self.run_as(As::User, cwd, args)
    }

    /// Makes a git repository with one commit under this HOME (`name` may hold folders).
    pub fn repo(&self, name: &str) -> PathBuf {
        let p = self.home().join("code").join(name);
        std::fs::create_dir_all(&p).unwrap();
        git(&p, ["init", "-q", "-b", "main"]);
        std::fs::write(p.join("README.md"), format!("# {name}\n")).unwrap();
        git(&p, ["add", "."]);
        git(&p, ["commit", "-q", "-m", "first"]);
        p
    }

    /// The ids of the sessions recorded under this HOME.
    pub fn session_ids(&self) -> Vec<String> {
        std::fs::read_dir(self.sessions())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Asserts there is exactly one session under this HOME and returns its id.
    #[track_caller]
    pub fn only_session(&self) -> String {
        let ids = self.session_ids();
        assert_eq!(ids.len(), 1, "sessions: {ids:?}");
        ids[0].clone()
    }

    /// Starts a session in the background (`cmd` is an `sbx run ...` command) and waits until
    /// its agent container answers `probe` (run there with `docker exec`). Returns the child,
    /// whose stdout and stderr are piped, and the session id.
    #[track_caller]
    pub fn spawn_session(&self, mut cmd: Command, probe: &[&str]) -> (Child, String) {
        let before = self.session_ids();
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
            id = self
                .session_ids()
                .into_iter()
                .find(|i| !before.contains(i))
                .unwrap_or_default();
            !id.is_empty()
                && docker(["exec", &format!("sbx-{id}-agent")].iter().chain(probe))
                    .status
                    .success()
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

    /// A Docker network of the test's own (labelled, uniquely named), removed with its
    /// containers when this is dropped. `extra` goes to `docker network create`.
    #[track_caller]
    pub fn net(&self, extra: &[&str]) -> TestNet<'_> {
        let name = unique("net");
        docker_ok(
            ["network", "create", "--label", TEST_LABEL]
                .iter()
                .chain(extra)
                .chain([&name.as_str()]),
        );
        self.made.borrow_mut().networks.push(name.clone());
        TestNet { name, env: self }
    }

    /// Removes this container (with `docker rm -f`) when dropped, before the networks.
    pub fn remove_container_on_drop(&self, name: &str) {
        self.made.borrow_mut().containers.push(name.to_owned());
    }

    /// Removes every name in this image repository when dropped (`sbxtest-early`: its alias
    /// and fingerprint tags), so an image only it named goes, and one other names share stays.
    pub fn remove_image_repo_on_drop(&self, repo: &str) {
        self.made.borrow_mut().image_repos.push(repo.to_owned());
    }

    /// A unique name prefix for stand-in guests (`sbxtest-<kind>-...`; the doubles'
    /// `LIMA_TEST_PREFIX`): the containers named with it and the disks the `limactl` double kept
    /// for them are removed when this is dropped.
    pub fn guest_prefix(&self, kind: &str) -> String {
        let prefix = unique(kind);
        self.made.borrow_mut().guests.push(prefix.clone());
        prefix
    }

    /// Runs `f` when dropped, before anything else is removed.
    pub fn on_drop(&self, f: impl FnOnce() + 'static) {
        self.made.borrow_mut().hooks.push(Box::new(f));
    }

    /// Removes what this HOME's sessions left on the engine: package caches, spare gates, the
    /// sessions' containers and networks. Quiet, and never panics: it runs while a failed test
    /// unwinds.
    fn remove_sessions(&self) {
        let spares: Vec<String> = std::fs::read_dir(self.cache().join("sbx/spares"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let sessions = self.session_ids();
        if (sessions.is_empty() && spares.is_empty()) || !engine_answers() {
            return;
        }
        let _ = self
            .sbx()
            .current_dir(self.home())
            .args(["cache", "rm", "--all"])
            .output();
        for id in spares {
            let _ = docker(["rm", "-f", &format!("sbx-{id}-gate")]);
        }
        for id in sessions {
            for c in session_containers(&id) {
                let _ = docker(["rm", "-f", &c]);
            }
            for n in session_networks(&id) {
                let _ = docker(["network", "rm", &n]);
            }
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let made = std::mem::take(self.made.get_mut());
        for hook in made.hooks.into_iter().rev() {
            hook();
        }
        self.remove_sessions();
        for c in &made.containers {
            let _ = docker(["rm", "-f", c]);
        }
        // Sessions attached with `--network` are gone by now, and the test hosts with them.
        for n in &made.networks {
            let _ = docker(["network", "rm", n]);
        }
        for prefix in &made.guests {
            remove_guests(prefix);
        }
        for repo in &made.image_repos {
            remove_repo(repo);
        }
    }
}

/// A name no other test (or run) uses: `sbxtest-<prefix>-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "sbxtest-{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}
