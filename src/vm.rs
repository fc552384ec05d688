//! VM mode's provider: the golden VM's template (embedded from `lima-templates/`), the
//! provisioning scripts (`provision/`), and every `limactl`/`colima` call, each with `--tty=false`
//! and a timeout, through the process module. Argument building and `limactl list --json`
//! parsing are pure and unit-tested; SSH and the container session are other modules' work.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{VmProvider, VmSettings};
use crate::process::{Cmd, ProcessError};

mod colima;
pub use colima::*;

pub const TEMPLATE: &str = include_str!("../lima-templates/sbx.yaml");
pub const PROVISION_DOCKER: &str = include_str!("../provision/docker.sh");
/// Before 2.2.0 a virtiofs mount whose path holds a space was skipped without an error (and
/// every virtiofs mount is `nofail`); 2.0 brought `clone`'s `--mount-only`.
pub const MIN_LIMA: (u32, u32) = (2, 2);
/// The socket path length limit (`sun_path`): 104 on macOS, 108 on Linux, NUL included.
pub const UNIX_PATH_MAX: usize = if cfg!(target_os = "macos") { 104 } else { 108 };
/// The longest instance name sbx makes (`sbx-g-` and 12 hex digits; sessions' are shorter).
const LONGEST_NAME: usize = 18;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("`{program}` is not installed")]
    Missing { program: String },
    #[error("Lima {found} is too old; sbx needs Lima 2.2 or newer")]
    TooOld { found: String },
    #[error("VM mode cannot run as root (`limactl` refuses to)")]
    Root,
    #[error(
        "sbx's Lima home `{home}` is too long for the VM's Unix sockets ({len} of {max} bytes)"
    )]
    HomeTooLong {
        home: PathBuf,
        len: usize,
        max: usize,
    },
    #[error(
        "sbx's Lima home `{home}` holds `_config/{file}`, which Lima would merge into every sbx VM"
    )]
    ForeignConfig { home: PathBuf, file: String },
    #[error(
        "VM mode cannot share `{path}`: Lima splits or misreads folder paths containing `{bad}`"
    )]
    UnsharablePath { path: PathBuf, bad: String },
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
    #[error("Docker in the VM `{name}` did not answer within {secs} s")]
    DockerNotReady { name: String, secs: u64 },
    #[error("the VM `{name}` does not show the host's `{path}`: {why}")]
    MountMissing {
        name: String,
        path: PathBuf,
        why: String,
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

impl crate::error::Hint for VmError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            VmError::Missing { program } if program == "colima" => {
                "install Colima (`brew install colima`), or use Lima (`vm.provider: lima`)".into()
            }
            VmError::Missing { .. } | VmError::TooOld { .. } => {
                "install or upgrade Lima: `brew install lima` (or see https://lima-vm.io)".into()
            }
            VmError::Root => "run sbx as your own user".into(),
            VmError::HomeTooLong { .. } => {
                "set `SBX_LIMA_HOME` to a short folder of yours, such as `~/.sbx-lima`".into()
            }
            VmError::ForeignConfig { home, file } => format!(
                "sbx's VMs take no settings from there: remove `{}`",
                home.join("_config").join(file).display()
            ),
            VmError::ColimaTooOld { .. } => {
                "upgrade Colima (`brew upgrade colima`): sbx starts session VMs with `--port-forwarder=none` and `--mount none`, which Colima 0.10.0 introduced".into()
            }
            VmError::ColimaHomeTooLong { .. } => {
                "point `XDG_CACHE_HOME` at a shorter folder (sbx keeps its Colima profiles in `$XDG_CACHE_HOME/sbx/colima`), or use Lima (`vm.provider: lima`)".into()
            }
            VmError::ColimaMount { .. } => {
                "move the repository (or sbx's cache folder, `XDG_CACHE_HOME`) to a path without spaces, commas or colons, or use Lima (`vm.provider: lima`)".into()
            }
            VmError::UnsharablePath { .. } => {
                "move or rename the folder, or run without `--vm`".into()
            }
            VmError::DockerNotReady { .. } => {
                "try again; if it persists, rebuild the golden VM with `sbx setup --vm`".into()
            }
            VmError::MountMissing { .. } => {
                "Lima skips a mount it cannot make without an error (`nofail`): check the folder exists and `limactl --version` is 2.2 or newer; `sbx gc` removes what is left"
                    .into()
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

/// The hypervisor for this host: vz (Apple's, fast) on macOS, except on Intel Macs before macOS
/// 15.5, where vz cannot boot Linux 6.12 or newer (Debian 13's kernel): QEMU there, as elsewhere.
pub fn vm_type_for(os: &str, arch: &str, macos: Option<(u32, u32)>) -> &'static str {
    match (os, arch, macos) {
        ("macos", "aarch64", _) => "vz",
        ("macos", _, Some(v)) if v >= (15, 5) => "vz",
        _ => "qemu",
    }
}

/// [`vm_type_for`] this machine (asks `sw_vers` on macOS).
pub fn default_vm_type() -> &'static str {
    let macos = if cfg!(target_os = "macos") && std::env::consts::ARCH != "aarch64" {
        Cmd::new("sw_vers")
            .arg("-productVersion")
            .timeout(Duration::from_secs(10))
            .output_blocking()
            .ok()
            .and_then(|o| parse_version(&o.stdout))
    } else {
        None
    };
    vm_type_for(std::env::consts::OS, std::env::consts::ARCH, macos)
}

/// Lima puts a mount's path into a yq expression between double quotes and splits
/// `--mount-only` values at commas: paths with these characters cannot be shared faithfully.
pub fn check_mount_path(path: &Path) -> Result<(), VmError> {
    let text = path.to_string_lossy();
    match text
        .chars()
        .find(|c| matches!(c, ',' | '"' | '\\') || c.is_control())
    {
        Some(c) => Err(VmError::UnsharablePath {
            path: path.to_owned(),
            bad: c.escape_default().to_string(),
        }),
        None => Ok(()),
    }
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
    debug_assert!(mounts.iter().all(|m| check_mount_path(&m.path).is_ok()));
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
    /// Where sbx pins the instances' SSH host keys (a pin goes with its instance).
    pub pins: PathBuf,
}

impl Lima {
    /// Checks what VM mode needs before anything is made: not root, `limactl` present and
    /// recent, and a Lima home of sbx's own (`SBX_LIMA_HOME`, else `<cache>/lima`), so that a
    /// user's `LIMA_HOME/_config/default.yaml` or `override.yaml` (mounts, VM type, provisioning,
    /// port forwards, merged by Lima into every instance) never reaches a session VM; short
    /// enough, symlinks resolved as Lima resolves them, for the instances' Unix sockets.
    pub async fn locate(dirs: &crate::paths::Dirs, provider: VmProvider) -> Result<Lima, VmError> {
        if rustix::process::getuid().is_root() {
            return Err(VmError::Root);
        }
        if provider == VmProvider::Colima {
            let mut lima = Lima::locate_colima(&dirs.cache).await?;
            lima.pins = dirs.cache.join("vm").join("known_hosts");
            return Ok(lima);
        }
        let home = crate::env::non_empty(crate::env::SBX_LIMA_HOME)
            .map(PathBuf::from)
            .unwrap_or_else(|| dirs.cache.join("lima"));
        let home = own_home(&home)?;
        check_home_length(&home)?;
        let lima = Lima {
            program: "limactl".into(),
            home,
            colima: None,
            pins: dirs.cache.join("vm").join("known_hosts"),
        };
        lima.check_version().await?;
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
            .inherit(&[crate::env::LIMA_ALL])
            .inherit(crate::env::PROXIES)
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
            // A missing instance is "unmatched instances", exit 1; anything else is a failure
            // to report as such (not as a missing VM).
            if out.stderr.contains("unmatched instances")
                || out.stderr.contains("No instance matching")
            {
                return Ok(None);
            }
            return Err(VmError::Command {
                command: format!("limactl list {name}"),
                message: last_line(&out.stderr),
            });
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

    /// Deletes an instance (stopping it first); a missing one is fine. A folder Lima calls
    /// broken (no `lima.yaml`: a clone interrupted by Ctrl-C) is refused by `limactl delete`, so
    /// sbx removes it itself, without following anything inside.
    pub async fn delete(&self, name: &str) -> Result<(), VmError> {
        let result = self
            .run(delete_args(name), Duration::from_secs(120))
            .await
            .map(|_| ());
        crate::ssh::forget(&self.pins, name);
        let dir = self.home.join(name);
        if result.is_err()
            && is_instance_name(name)
            && dir.is_dir()
            && !dir.join("lima.yaml").exists()
        {
            let parent = crate::safefs::Dir::open(&self.home).map_err(|e| VmError::Command {
                command: format!("opening `{}`", self.home.display()),
                message: e.to_string(),
            })?;
            return parent
                .remove_tree(name.as_ref())
                .map_err(|e| VmError::Command {
                    command: format!("removing `{}`", dir.display()),
                    message: e.to_string(),
                });
        }
        result
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
        crate::ssh::forget(&self.pins, name);
        if self.colima.is_some() {
            self.colima_delete(name).await
        } else {
            self.delete(name).await
        }
    }
}

/// A name sbx could have made (so a folder of that name in the Lima home is an instance's).
fn is_instance_name(name: &str) -> bool {
    name.starts_with("sbx-")
        && name.len() <= LONGEST_NAME
        && name[4..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Makes (0700) and resolves sbx's Lima home, and refuses one holding the files Lima would merge
/// into every instance.
fn own_home(home: &Path) -> Result<PathBuf, VmError> {
    crate::state::create_private_dir(home).map_err(|e| VmError::Command {
        command: format!("creating `{}`", home.display()),
        message: e.to_string(),
    })?;
    let home = home.canonicalize().map_err(|e| VmError::Command {
        command: format!("resolving `{}`", home.display()),
        message: e.to_string(),
    })?;
    for file in ["default.yaml", "override.yaml"] {
        if home.join("_config").join(file).exists() {
            return Err(VmError::ForeignConfig {
                home,
                file: file.into(),
            });
        }
    }
    Ok(home)
}

/// Lima's own check: `<home>/<name>/ssh.sock.<16 characters>` must be shorter than the limit.
fn check_home_length(home: &Path) -> Result<(), VmError> {
    let len = home.as_os_str().len() + 1 + LONGEST_NAME + 1 + "ssh.sock.1234567890123456".len();
    if len >= UNIX_PATH_MAX {
        return Err(VmError::HomeTooLong {
            home: home.to_owned(),
            len,
            max: UNIX_PATH_MAX,
        });
    }
    Ok(())
}

/// The name of a session's VM.
pub fn session_vm(id: &str) -> String {
    format!("sbx-{id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Hint;

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
        assert!(t.contains("minimumLimaVersion: \"2.2.0\""));
        assert_eq!(v_probe_count(&t), 1);
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
        assert!(parse_version("2.1.9").unwrap() < MIN_LIMA);
        assert!(parse_version("2.2.0").unwrap() >= MIN_LIMA);
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

    fn v_probe_count(t: &str) -> usize {
        let v: serde_json::Value = serde_saphyr::from_str(t).unwrap();
        let probes = v["probes"].as_array().unwrap();
        assert!(probes[0]["script"].as_str().unwrap().starts_with("#!"));
        probes.len()
    }

    #[test]
    fn hypervisor_per_host() {
        assert_eq!(vm_type_for("macos", "aarch64", None), "vz");
        assert_eq!(vm_type_for("macos", "x86_64", Some((15, 5))), "vz");
        assert_eq!(vm_type_for("macos", "x86_64", Some((26, 0))), "vz");
        // Intel before 15.5: vz cannot boot Debian 13's kernel.
        assert_eq!(vm_type_for("macos", "x86_64", Some((15, 4))), "qemu");
        assert_eq!(vm_type_for("macos", "x86_64", None), "qemu");
        assert_eq!(vm_type_for("linux", "x86_64", None), "qemu");
    }

    #[test]
    fn names_and_paths() {
        let g = crate::placement::golden::name_for("0123456789abcdef0123");
        assert_eq!(g, "sbx-g-0123456789ab");
        assert!(
            g.len() <= LONGEST_NAME
                && crate::placement::golden::is_golden(&g)
                && crate::placement::golden::is_golden(crate::placement::golden::LEGACY)
        );
        assert!(!crate::placement::golden::is_golden(&session_vm(
            "1a2b3c4d"
        )));
        assert!(is_instance_name("sbx-1a2b3c4d") && is_instance_name(&g));
        assert!(!is_instance_name("../x") && !is_instance_name("sbx-../../x"));
        assert!(check_mount_path(Path::new("/Users/a/My Code/app")).is_ok());
        for bad in ["/a,b", "/a\"b", "/a\\b", "/a\nb"] {
            assert!(check_mount_path(Path::new(bad)).is_err(), "{bad}");
        }
        assert!(check_home_length(Path::new("/Users/a/.cache/sbx/lima")).is_ok());
        let long = PathBuf::from(format!("/Users/a/{}", "x".repeat(70)));
        assert!(matches!(
            check_home_length(&long),
            Err(VmError::HomeTooLong { .. })
        ));
    }

    #[test]
    fn fingerprint_follows_template_and_images() {
        let t = render_template(&settings(), "vz");
        let a = crate::placement::golden::fingerprint(&t, &["img1".into()]);
        assert_eq!(
            a,
            crate::placement::golden::fingerprint(&t, &["img1".into()])
        );
        assert_ne!(
            a,
            crate::placement::golden::fingerprint(&t, &["img2".into()])
        );
        assert_ne!(
            a,
            crate::placement::golden::fingerprint(
                &render_template(&settings(), "qemu"),
                &["img1".into()]
            )
        );
    }
}
