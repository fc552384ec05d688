//! The Docker engine from the tests' side: the `docker` CLI, sbx's images, what sessions left,
//! and the tests' own networks with their hosts (web servers, DNS servers), all labelled.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::*;

/// The label on everything the tests make on the engine themselves.
pub const TEST_LABEL: &str = "dev.sbx.test=1";

/// Whether a Docker engine answers (asked once per test process).
pub fn engine_answers() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Builds sbx's images once per test process (a fast no-op when they are current).
pub fn ensure_images() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let env = TestEnv::new();
        assert_ok(&env.run(env.home(), ["setup"]));
    });
}

/// `docker args...`, its output whatever the outcome.
pub fn docker(args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Output {
    Command::new("docker").args(args).output().unwrap()
}

/// `docker args...`, asserted to succeed; its stdout, trimmed.
#[track_caller]
pub fn docker_ok(args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> String {
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let o = docker(&args);
    assert!(
        o.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(&o).trim().to_owned()
}

/// The lines `docker args...` prints, none when it fails (for cleanup, which must not panic).
fn docker_lines(args: &[&str]) -> Vec<String> {
    stdout(&docker(args))
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Names of containers (any state) carrying a session's label.
pub fn session_containers(session: &str) -> Vec<String> {
    let filter = format!("label=dev.sbx.session={session}");
    docker_lines(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"])
}

/// Names of networks carrying a session's label.
pub fn session_networks(session: &str) -> Vec<String> {
    let filter = format!("label=dev.sbx.session={session}");
    docker_lines(&[
        "network",
        "ls",
        "--filter",
        &filter,
        "--format",
        "{{.Name}}",
    ])
}

/// Removes every name in an image repository (`sbxtest-early`: its alias and fingerprint tags),
/// so an image only this repository named goes, and one that other names share stays.
pub fn remove_repo(repo: &str) {
    for n in docker_lines(&["images", repo, "--format", "{{.Repository}}:{{.Tag}}"]) {
        let _ = docker(["rmi", &n]);
    }
}

/// The stand-in guests: `sbxtest-guest-bare` is a fresh cloud image as far as sbx can tell (no
/// Docker, the login user made at boot and not in the `docker` group); `sbxtest-guest` has
/// Docker installed, as a remote Docker host or Colima's image does.
pub fn build_guest_images() {
    for (tag, dir) in [
        ("sbxtest-guest-bare:latest", "guest"),
        ("sbxtest-guest:latest", "guest-docker"),
    ] {
        docker_ok([
            OsStr::new("build"),
            OsStr::new("-q"),
            OsStr::new("-t"),
            OsStr::new(tag),
            support().join(dir).as_os_str(),
        ]);
    }
}

/// Removes the stand-in guests named with `prefix` and the disks the `limactl` double kept for
/// them.
pub(super) fn remove_guests(prefix: &str) {
    let filter = format!("name={prefix}");
    for n in docker_lines(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"]) {
        let _ = docker(["rm", "-f", &n]);
    }
    let disks = docker_lines(&[
        "images",
        "limatest-disk",
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ]);
    for d in disks.iter().filter(|d| d.contains(prefix)) {
        let _ = docker(["rmi", "-f", d]);
    }
}

/// A Docker network of the test's own ([`TestEnv::net`]); it and the hosts on it are removed
/// when the test's [`TestEnv`] is dropped, after its sessions.
pub struct TestNet<'a> {
    pub name: String,
    pub(super) env: &'a TestEnv,
}

impl TestNet<'_> {
    /// A test host: `image cmd...` as root with these network aliases. Returns its name.
    #[track_caller]
    pub fn host(&self, aliases: &[&str], image: &str, cmd: &[&str]) -> String {
        self.host_with(&[], aliases, image, cmd)
    }

    /// [`TestNet::host`] with `extra` arguments to `docker run`.
    #[track_caller]
    fn host_with(&self, extra: &[&str], aliases: &[&str], image: &str, cmd: &[&str]) -> String {
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
        args.extend_from_slice(extra);
        for a in aliases {
            args.extend(["--network-alias", a]);
        }
        args.push(image);
        args.extend_from_slice(cmd);
        self.env.remove_container_on_drop(&name);
        docker_ok(&args);
        name
    }

    /// A web server answering `hello from <alias>` on port 80.
    #[track_caller]
    pub fn web_host(&self, alias: &str) -> String {
        let script = format!(
            "mkdir -p /srv && echo 'hello from {alias}' > /srv/index.html && cd /srv && exec python3 -m http.server --bind :: 80"
        );
        let name = self.host(&[alias], "sbx-sandbox:latest", &["sh", "-c", &script]);
        let ok = wait_until(Duration::from_secs(15), || {
            docker([
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

    /// A DNS server of the test's own (dnsmasq) that logs every query it receives and answers
    /// from a hosts file the test can rewrite ([`DnsServer::hosts`]).
    #[track_caller]
    pub fn dns_server(&self, hosts: &str) -> DnsServer {
        let dir = self.env.home().join(unique("dns"));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("hosts");
        std::fs::write(&file, hosts).unwrap();
        let mount = format!("{}:/dns:ro", dir.display());
        let name = self.host_with(
            &["-v", &mount],
            &[],
            "sbx-gate:latest",
            &[
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
            ],
        );
        let ip = self.ip(&name, false);
        DnsServer {
            name,
            ip,
            hosts: file,
        }
    }

    /// A container's address on this network.
    #[track_caller]
    pub fn ip(&self, container: &str, v6: bool) -> String {
        let field = if v6 { "GlobalIPv6Address" } else { "IPAddress" };
        docker_ok([
            "inspect",
            "-f",
            &format!(
                "{{{{(index .NetworkSettings.Networks \"{}\").{field}}}}}",
                self.name
            ),
            container,
        ])
    }

    /// `sbx run --network NET --allow ... -- CMD`.
    pub fn run_args(&self, allow: &[&str], cmd: Vec<String>) -> Vec<String> {
        let mut args: Vec<String> = vec!["run".into(), "--network".into(), self.name.clone()];
        for a in allow {
            args.push("--allow".into());
            args.push((*a).into());
        }
        args.push("--".into());
        args.extend(cmd);
        args
    }
}

/// A test's DNS server ([`TestNet::dns_server`]).
pub struct DnsServer {
    /// Its container.
    pub name: String,
    pub ip: String,
    /// The hosts file it answers from (send it `SIGHUP` after a change).
    pub hosts: PathBuf,
}

impl DnsServer {
    /// What it logged: every query it received.
    pub fn log(&self) -> String {
        stderr(&docker(["logs", &self.name]))
    }
}
