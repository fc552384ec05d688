//! VM mode's provider: the golden VM's template (embedded from `lima-templates/`), the
//! provisioning scripts (`provision/`), and every `limactl`/`colima` call, each with `--tty=false`
//! and a timeout, through the process module. Argument building and `limactl list --json`
//! parsing are pure and unit-tested; SSH and the container session are other modules' work.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::{VmProvider, VmSettings};
use crate::process::{Cmd, ProcessError};

mod colima;
pub use colima::*;

pub const TEMPLATE: &str = include_str!("../lima-templates/sbx.yaml");
pub const PROVISION_DOCKER: &str = include_str!("../provision/docker.sh");
/// The golden instance every session VM is cloned from.
pub const GOLDEN: &str = "sbx-golden";
/// Lima versions before this lack `clone --start`, `--mount-only` and stable disk names.
pub const MIN_LIMA: (u32, u32) = (2, 0);
/// The socket path length limit: 104 on macOS, 108 on Linux; the check is strict.
const UNIX_PATH_MAX: usize = if cfg!(target_os = "macos") { 104 } else { 108 };

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("`{program}` is not installed")]
    Missing { program: String },
    #[error("Lima {found} is too old; sbx needs Lima 2.0 or newer")]
    TooOld { found: String },
    #[error("VM mode cannot run as root (`limactl` refuses to)")]
    Root,
    #[error("`LIMA_HOME` (`{home}`) is too long for the VM's Unix sockets")]
    HomeTooLong { home: PathBuf },
    #[error("Colima {found} is too old; sbx needs Colima 0.10.0 or newer")]
    ColimaTooOld { found: String },
    #[error(
        "sbx's Colima home `{home}` is too long for the session VMs' Unix sockets (at most 103 bytes on macOS)"
    )]
    ColimaHomeTooLong { home: PathBuf },
    #[error(
        "Colima cannot mount `{path}`: its `--mount` flag splits paths at `,` and `:`, and rejects spaces"
    )]
    ColimaMount { path: PathBuf },
    #[error("cannot prepare `{path}`")]
    Home {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the golden VM is missing or out of date")]
    GoldenStale,
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
    #[error("the VM `{name}` did not become ready: {message}")]
    Boot { name: String, message: String },
    #[error("cannot read `limactl list` output: {message}")]
    Parse { message: String },
}

impl VmError {
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            VmError::Missing { program } if program == "colima" => {
                "install Colima (`brew install colima`), or use Lima (`vm.provider: lima`)".into()
            }
            VmError::Missing { .. } | VmError::TooOld { .. } => {
                "install or upgrade Lima: `brew install lima` (or see https://lima-vm.io)".into()
            }
            VmError::Root => "run sbx as your own user".into(),
            VmError::HomeTooLong { .. } => {
                "set `LIMA_HOME` to a short folder, such as `~/.lima`".into()
            }
            VmError::ColimaTooOld { .. } => {
                "upgrade Colima (`brew upgrade colima`): sbx starts session VMs with `--port-forwarder=none` and `--mount none`, which Colima 0.10.0 introduced".into()
            }
            VmError::ColimaHomeTooLong { .. } => {
                "point `XDG_CACHE_HOME` at a shorter folder (sbx keeps its Colima profiles in `$XDG_CACHE_HOME/sbx/colima`), or use Lima (`vm.provider: lima`)".into()
            }
            VmError::ColimaMount { .. } => {
                "move the repository (or sbx's cache folder, `XDG_CACHE_HOME`) to a path without spaces, commas or colons, or use Lima (`vm.provider: lima`)".into()
            }
            VmError::GoldenStale => "run `sbx setup --vm` (once, and after upgrading sbx)".into(),
            VmError::Boot { .. } => {
                "see the instance's `ha.stderr.log` under `LIMA_HOME`; `sbx gc` removes what is left"
                    .into()
            }
            _ => return None,
        })
    }
}

impl From<ProcessError> for VmError {
    fn from(e: ProcessError) -> Self {
        match e {
            ProcessError::NotFound { program } => VmError::Missing { program },
            ProcessError::Failed {
                command, stderr, ..
            } => VmError::Command {
                command,
                message: last_line(&stderr),
            },
            other => VmError::Command {
                command: "limactl".into(),
                message: other.to_string(),
            },
        }
    }
}

/// limactl logs `time=... level=fatal msg="..."`; the message is what a user needs.
fn last_line(stderr: &str) -> String {
    let line = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    match line.split_once("msg=") {
        Some((_, m)) => m.trim().trim_matches('"').replace("\\\"", "\""),
        None => line.trim().to_owned(),
    }
}

/// The golden VM's template with the settings filled in.
pub fn render_template(settings: &VmSettings, vm_type: &str) -> String {
    TEMPLATE
        .replace("{{VM_TYPE}}", vm_type)
        .replace("{{CPUS}}", &settings.cpus.to_string())
        .replace("{{MEMORY}}", &format_gib(settings.memory_gib))
        .replace("{{DISK}}", &format_gib(settings.disk_gib))
}

pub(crate) fn format_gib(g: f64) -> String {
    if g.fract() == 0.0 {
        format!("{}", g as u64)
    } else {
        format!("{g}")
    }
}

/// vz on macOS (fast, Apple's hypervisor), qemu elsewhere.
pub fn default_vm_type() -> &'static str {
    if cfg!(target_os = "macos") {
        "vz"
    } else {
        "qemu"
    }
}

/// What decides whether the golden VM must be rebuilt: template, provisioning and images.
pub fn golden_fingerprint(template: &str, image_fingerprints: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(template.as_bytes());
    h.update(b"\0");
    h.update(PROVISION_DOCKER.as_bytes());
    for f in image_fingerprints {
        h.update(b"\0");
        h.update(f.as_bytes());
    }
    hex::encode(h.finalize())
}

/// A folder a session VM mounts, at the same path inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmMount {
    pub path: PathBuf,
    pub writable: bool,
}

/// `limactl` arguments, always non-interactive.
pub fn args(sub: &[&str]) -> Vec<String> {
    std::iter::once("--tty=false")
        .chain(sub.iter().copied())
        .map(str::to_owned)
        .collect()
}

pub fn create_args(name: &str, template: &Path) -> Vec<String> {
    let mut a = args(&["create", &format!("--name={name}")]);
    a.push(template.display().to_string());
    a
}

pub fn clone_args(golden: &str, name: &str, mounts: &[VmMount]) -> Vec<String> {
    let mut a = args(&["clone", golden, name]);
    if mounts.is_empty() {
        a.push("--mount-none".into());
    }
    for m in mounts {
        a.push("--mount-only".into());
        a.push(format!(
            "{}{}",
            m.path.display(),
            if m.writable { ":w" } else { "" }
        ));
    }
    a
}

pub fn start_args(name: &str, timeout: Duration) -> Vec<String> {
    args(&["start", &format!("--timeout={}s", timeout.as_secs()), name])
}

pub fn stop_args(name: &str) -> Vec<String> {
    args(&["stop", name])
}

pub fn delete_args(name: &str) -> Vec<String> {
    args(&["delete", "-f", name])
}

/// One instance from `limactl list --json` (one JSON object per line; unknown keys ignored).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    pub name: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub dir: PathBuf,
    #[serde(default)]
    pub ssh_local_port: u16,
    #[serde(default)]
    pub ssh_address: Option<String>,
    #[serde(default)]
    pub protected: bool,
    #[serde(default)]
    pub config: InstanceConfig,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct InstanceConfig {
    #[serde(default)]
    pub user: InstanceUser,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct InstanceUser {
    #[serde(default)]
    pub name: String,
}

pub fn parse_list(output: &str) -> Result<Vec<Instance>, VmError> {
    output
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            serde_json::from_str(l).map_err(|e| VmError::Parse {
                message: e.to_string(),
            })
        })
        .collect()
}

/// `2.1.0` → (2, 1)
pub fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.trim().trim_start_matches('v').split(['.', '-', '+']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The Lima (or Colima) installation sbx drives.
#[derive(Debug, Clone)]
pub struct Lima {
    pub program: String,
    pub home: PathBuf,
    /// Sessions run in Colima profiles (in sbx's own Colima home) instead of clones of the
    /// golden VM; `home` is then that Colima home's Lima home.
    pub colima: Option<Colima>,
}

impl Lima {
    /// The installation of `provider`: [`Lima::locate`] or [`Lima::locate_colima`] (whose home
    /// lives under sbx's cache folder).
    pub async fn locate_provider(
        provider: VmProvider,
        home_dir: &Path,
        cache: &Path,
    ) -> Result<Lima, VmError> {
        match provider {
            VmProvider::Lima => Lima::locate(home_dir).await,
            VmProvider::Colima => Lima::locate_colima(cache).await,
        }
    }

    /// Checks what VM mode needs before anything is made: not root, `limactl` present and
    /// recent, a `LIMA_HOME` short enough for Unix sockets.
    pub async fn locate(home_dir: &Path) -> Result<Lima, VmError> {
        if rustix::process::getuid().is_root() {
            return Err(VmError::Root);
        }
        let home = match std::env::var_os("LIMA_HOME") {
            Some(h) if !h.is_empty() => PathBuf::from(h),
            _ => home_dir.join(".lima"),
        };
        let lima = Lima {
            program: "limactl".into(),
            home,
            colima: None,
        };
        lima.check_version().await?;
        // `<home>/<name>/ssh.sock.<16 characters>` must fit; sbx's names are at most 12.
        if lima.home.as_os_str().len() + 1 + 12 + 1 + "ssh.sock.1234567890123456".len()
            >= UNIX_PATH_MAX
        {
            return Err(VmError::HomeTooLong { home: lima.home });
        }
        Ok(lima)
    }

    /// `limactl info`'s version must be at least [`MIN_LIMA`].
    async fn check_version(&self) -> Result<(), VmError> {
        let info = self
            .cmd(&["info"])
            .timeout(Duration::from_secs(30))
            .run()
            .await?;
        let version = serde_json::from_str::<serde_json::Value>(&info)
            .ok()
            .and_then(|v| v.get("version")?.as_str().map(str::to_owned))
            .unwrap_or_default();
        match parse_version(&version) {
            Some(v) if v >= MIN_LIMA => Ok(()),
            _ => Err(VmError::TooOld {
                found: if version.is_empty() {
                    "(unknown)".into()
                } else {
                    version
                },
            }),
        }
    }

    fn cmd(&self, a: &[&str]) -> Cmd {
        Cmd::new(&self.program)
            .args(a)
            .env("LIMA_HOME", &self.home)
            .timeout(Duration::from_secs(120))
    }

    async fn run(&self, a: Vec<String>, timeout: Duration) -> Result<String, VmError> {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        Ok(self.cmd(&refs).timeout(timeout).run().await?)
    }

    /// The instance, or `None` when it does not exist.
    pub async fn get(&self, name: &str) -> Result<Option<Instance>, VmError> {
        let out = self
            .cmd(&["list", "--json", name])
            .timeout(Duration::from_secs(30))
            .output()
            .await?;
        if !out.ok() {
            // A missing instance is "unmatched instances", exit 1.
            return Ok(None);
        }
        Ok(parse_list(&out.stdout)?
            .into_iter()
            .find(|i| i.name == name))
    }

    /// Every instance whose name starts with `prefix`.
    pub async fn list_prefixed(&self, prefix: &str) -> Result<Vec<Instance>, VmError> {
        let out = self
            .cmd(&["list", "--json"])
            .timeout(Duration::from_secs(30))
            .output()
            .await?;
        Ok(parse_list(&out.stdout)?
            .into_iter()
            .filter(|i| i.name.starts_with(prefix))
            .collect())
    }

    pub async fn create(&self, name: &str, template: &Path) -> Result<(), VmError> {
        self.run(create_args(name, template), Duration::from_secs(600))
            .await
            .map(|_| ())
    }

    pub async fn clone_instance(
        &self,
        golden: &str,
        name: &str,
        mounts: &[VmMount],
    ) -> Result<(), VmError> {
        self.run(clone_args(golden, name, mounts), Duration::from_secs(300))
            .await
            .map(|_| ())
    }

    pub async fn start(&self, name: &str, timeout: Duration) -> Result<Instance, VmError> {
        self.run(start_args(name, timeout), timeout + Duration::from_secs(30))
            .await
            .map_err(|e| VmError::Boot {
                name: name.to_owned(),
                message: e.to_string(),
            })?;
        match self.get(name).await? {
            Some(i) if i.status == "Running" && i.ssh_local_port > 0 => Ok(i),
            Some(i) => Err(VmError::Boot {
                name: name.to_owned(),
                message: format!("its status is `{}`", i.status),
            }),
            None => Err(VmError::Boot {
                name: name.to_owned(),
                message: "it disappeared".into(),
            }),
        }
    }

    pub async fn stop(&self, name: &str) -> Result<(), VmError> {
        self.run(stop_args(name), Duration::from_secs(240))
            .await
            .map(|_| ())
    }

    /// Deletes an instance (stopping it first); a missing one is fine.
    pub async fn delete(&self, name: &str) -> Result<(), VmError> {
        self.run(delete_args(name), Duration::from_secs(120))
            .await
            .map(|_| ())
    }

    pub async fn protect(&self, name: &str, on: bool) -> Result<(), VmError> {
        let sub = if on { "protect" } else { "unprotect" };
        self.run(args(&[sub, name]), Duration::from_secs(30))
            .await
            .map(|_| ())
    }

    /// Lima's SSH key for every instance.
    pub fn key(&self) -> PathBuf {
        self.home.join("_config/user")
    }
}

impl Lima {
    /// Deletes a session's VM, whichever provider made it (a missing one is fine).
    pub async fn remove_session_vm(&self, name: &str) -> Result<(), VmError> {
        if self.colima.is_some() {
            self.colima_delete(name).await
        } else {
            self.delete(name).await
        }
    }
}

/// The name of a session's VM.
pub fn session_vm(id: &str) -> String {
    format!("sbx-{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> VmSettings {
        VmSettings {
            provider: VmProvider::Lima,
            cpus: 4,
            memory_gib: 8.0,
            disk_gib: 64.0,
        }
    }

    #[test]
    fn template_snapshot() {
        insta::assert_snapshot!(render_template(&settings(), "vz"));
    }

    #[test]
    fn template_has_no_home_mount_and_ignores_every_port() {
        let t = render_template(&settings(), "qemu");
        assert!(t.contains("mounts: []"));
        assert!(t.contains("ignore: true"));
        assert!(t.contains("minimumLimaVersion"));
        assert!(!t.contains("{{"));
        let v: serde_json::Value = serde_saphyr::from_str(&t).unwrap();
        assert_eq!(v["vmType"], "qemu");
        assert_eq!(v["memory"], "8GiB");
    }

    #[test]
    fn argument_building() {
        assert_eq!(
            create_args("sbx-golden", Path::new("/c/golden.yaml")),
            [
                "--tty=false",
                "create",
                "--name=sbx-golden",
                "/c/golden.yaml"
            ]
        );
        let m = [
            VmMount {
                path: "/s/abc".into(),
                writable: true,
            },
            VmMount {
                path: "/code/app/.git".into(),
                writable: false,
            },
        ];
        assert_eq!(
            clone_args("sbx-golden", "sbx-abc", &m),
            [
                "--tty=false",
                "clone",
                "sbx-golden",
                "sbx-abc",
                "--mount-only",
                "/s/abc:w",
                "--mount-only",
                "/code/app/.git"
            ]
        );
        assert!(clone_args("g", "n", &[]).contains(&"--mount-none".to_owned()));
        assert_eq!(
            start_args("sbx-abc", Duration::from_secs(300)),
            ["--tty=false", "start", "--timeout=300s", "sbx-abc"]
        );
        assert_eq!(delete_args("x"), ["--tty=false", "delete", "-f", "x"]);
        for a in [stop_args("x"), delete_args("x")] {
            assert_eq!(a[0], "--tty=false");
        }
    }

    /// Built from the fields in the reference: one JSON object per line, extra keys present.
    const LIST: &str = r#"{"name":"sbx-golden","hostname":"lima-sbx-golden","status":"Stopped","dir":"/Users/a/.lima/sbx-golden","vmType":"vz","arch":"aarch64","cpus":4,"memory":8589934592,"disk":68719476736,"network":[],"sshLocalPort":0,"sshConfigFile":"/Users/a/.lima/sbx-golden/ssh.config","config":{"user":{"name":"a","uid":501,"home":"/home/a.linux"},"ssh":{"localPort":0}},"sshAddress":"127.0.0.1","protected":true,"limaVersion":"2.1.0","HostOS":"darwin"}
{"name":"sbx-1a2b3c4d","hostname":"lima-sbx-1a2b3c4d","status":"Running","dir":"/Users/a/.lima/sbx-1a2b3c4d","vmType":"vz","arch":"aarch64","sshLocalPort":60123,"hostAgentPID":4242,"driverPID":4243,"config":{"user":{"name":"a"}},"sshAddress":"127.0.0.1","protected":false,"errors":[]}
"#;

    #[test]
    fn parses_limactl_list_json_lines() {
        let l = parse_list(LIST).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(
            (l[0].name.as_str(), l[0].status.as_str(), l[0].protected),
            ("sbx-golden", "Stopped", true)
        );
        assert_eq!(l[1].ssh_local_port, 60123);
        assert_eq!(l[1].config.user.name, "a");
        assert_eq!(l[1].dir, Path::new("/Users/a/.lima/sbx-1a2b3c4d"));
        assert!(parse_list("No instance found.\n").unwrap().is_empty());
        assert!(parse_list("{broken").is_err());
    }

    #[test]
    fn versions_and_errors() {
        assert_eq!(parse_version("2.1.0"), Some((2, 1)));
        assert_eq!(parse_version("v1.2.3-rc1"), Some((1, 2)));
        assert!(parse_version("1.2.0").unwrap() < MIN_LIMA);
        assert_eq!(
            last_line("time=\"x\" level=fatal msg=\"instance \\\"sbx-x\\\" already exists\"\n"),
            "instance \"sbx-x\" already exists"
        );
        assert!(
            VmError::GoldenStale
                .hint()
                .unwrap()
                .contains("sbx setup --vm")
        );
    }

    #[test]
    fn fingerprint_follows_template_and_images() {
        let t = render_template(&settings(), "vz");
        let a = golden_fingerprint(&t, &["img1".into()]);
        assert_eq!(a, golden_fingerprint(&t, &["img1".into()]));
        assert_ne!(a, golden_fingerprint(&t, &["img2".into()]));
        assert_ne!(
            a,
            golden_fingerprint(&render_template(&settings(), "qemu"), &["img1".into()])
        );
    }
}
