//! Colima, the other VM provider: a session boots a profile of its own (Colima has no supported
//! clone) in a Colima home sbx owns (`<cache>/colima`), so the user's Colima templates, Lima
//! `_config` files, docker contexts and `~/.ssh/config` neither shape session VMs nor see them.
//! The version, host, home and argument decisions are pure and unit-tested; every call goes
//! through the process module.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Instance, Lima, UNIX_PATH_MAX, VmError, VmMount, format_gib, session_vm};
use crate::config::VmSettings;
use crate::process::Cmd;

/// The oldest Colima sbx drives: `--port-forwarder=none` and `--mount none` arrived in 0.10.0
/// (`--cpus` and `delete --data` in 0.9.0). 0.9 refuses `none` as a port forwarder; older ones
/// lack `--data`, so data disks would pile up.
pub const MIN_COLIMA: (u32, u32, u32) = (0, 10, 0);

/// Lima's `_config/override.yaml` in sbx's Colima home (see the file for why).
pub const LIMA_OVERRIDE: &str = include_str!("../../lima-templates/colima-override.yaml");

/// `colima version` prints `colima version v0.10.3` (release builds: `git describe`), or
/// `colima version 0.10.3` (Homebrew), then a commit line and, when the default profile runs, its
/// runtime's versions. `None` when the first part cannot be read (`development` builds).
pub fn parse_colima_version(out: &str) -> Option<(u32, u32, u32)> {
    let v = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("colima version "))?
        .trim()
        .trim_start_matches('v');
    let core = v.split(['-', '+']).next()?;
    let mut parts = core.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = match parts.next() {
        Some(p) => p.parse().ok()?,
        None => 0,
    };
    Some((major, minor, patch))
}

/// The machine Colima runs on, as far as its flags depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostOs {
    Linux,
    /// macOS with `sw_vers -productVersion` read as (major, minor), `None` when unreadable.
    MacOs(Option<(u32, u32)>),
}

/// `sw_vers -productVersion`: `14.5`, `13.0.1`, `26.0`.
pub fn parse_macos_version(out: &str) -> Option<(u32, u32)> {
    let mut parts = out.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = match parts.next() {
        Some(m) => m.parse().ok()?,
        None => 0,
    };
    Some((major, minor))
}

/// `--vm-type` for this host, or `None` to leave the flag out. Colima defines the flag only on
/// macOS 13 or newer (where Apple's Virtualization framework, `vz`, is its default); elsewhere it
/// is an unknown flag and `colima start` fails. When the macOS version cannot be read, Colima
/// itself assumes an older one (`util.MacOS13OrNewer`), so sbx leaves the flag out too.
pub fn colima_vm_type(host: HostOs) -> Option<&'static str> {
    match host {
        HostOs::MacOs(Some((major, _))) if major >= 13 => Some("vz"),
        _ => None,
    }
}

/// `--disk` is an integer number of GiB (Colima's flag is an `int`; `1.5` is a parse error):
/// rounded up, so the VM never gets less than asked for, and at least 1.
pub fn colima_disk_gib(gib: f64) -> u64 {
    if gib.is_finite() && gib > 1.0 {
        gib.ceil() as u64
    } else {
        1
    }
}

/// One `--mount` value. Colima reads the flag as comma-separated values (a `,` or `"` splits or
/// breaks it) and splits each at `:` (a path with a colon would mount its prefix instead:
/// `/a:b` mounts `/a`); Colima after 0.10.3 rejects spaces, and Lima before 2.2 skipped such
/// mounts silently. Such a path is refused rather than mangled.
pub fn colima_mount_arg(m: &VmMount) -> Result<String, VmError> {
    let bad = || VmError::ColimaMount {
        path: m.path.clone(),
    };
    let s = m.path.to_str().ok_or_else(bad)?;
    if !m.path.is_absolute()
        || s.chars()
            .any(|c| matches!(c, ':' | ',' | '"') || c.is_whitespace() || c.is_control())
    {
        return Err(bad());
    }
    Ok(format!("{s}{}", if m.writable { ":w" } else { "" }))
}

/// Refuses, before anything boots, mounts Colima cannot express.
pub fn check_colima_mounts(mounts: &[VmMount]) -> Result<(), VmError> {
    mounts
        .iter()
        .try_for_each(|m| colima_mount_arg(m).map(|_| ()))
}

/// `colima start` for a session's own profile: Docker as the runtime; no docker-context switch,
/// no `~/.ssh/config` edit, no template defaults; no guest port forwarded to the host; only the
/// given mounts.
pub fn colima_start_args(
    profile: &str,
    s: &VmSettings,
    mounts: &[VmMount],
    vm_type: Option<&str>,
) -> Result<Vec<String>, VmError> {
    let mut a: Vec<String> = [
        "start",
        "--profile",
        profile,
        "--activate=false",
        "--ssh-config=false",
        "--template=false",
        "--runtime",
        "docker",
        "--port-forwarder=none",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    a.extend([
        "--cpus".into(),
        s.cpus.to_string(),
        "--memory".into(),
        format_gib(s.memory_gib),
        "--disk".into(),
        colima_disk_gib(s.disk_gib).to_string(),
    ]);
    if let Some(t) = vm_type {
        a.extend(["--vm-type".into(), t.to_owned()]);
    }
    if mounts.is_empty() {
        a.extend(["--mount".into(), "none".into()]);
    }
    for m in mounts {
        a.push("--mount".into());
        a.push(colima_mount_arg(m)?);
    }
    Ok(a)
}

/// `colima delete` without a prompt (without `--force` Colima asks, and with no terminal the
/// answer is no: nothing is deleted and it exits 0) and with the profile's data disk, so nothing
/// piles up.
pub fn colima_delete_args(profile: &str) -> Vec<String> {
    ["delete", "--profile", profile, "--force", "--data"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

/// The Lima instance behind a Colima profile (`config.ProfileFromName`): `colima` for the
/// default profile, else `colima-<name>` (a leading `colima-` in the name is dropped first).
pub fn colima_instance(profile: &str) -> String {
    match profile {
        "" | "colima" | "default" => "colima".into(),
        p => format!("colima-{}", p.strip_prefix("colima-").unwrap_or(p)),
    }
}

/// Colima's Lima home: `$LIMA_HOME` when set (Colima obeys it), else `<colima home>/_lima`.
pub fn colima_lima_home(colima_home: &Path, lima_home: Option<&OsStr>) -> PathBuf {
    match lima_home {
        Some(h) if !h.is_empty() => PathBuf::from(h),
        _ => colima_home.join("_lima"),
    }
}

/// Where sbx keeps its own Colima profiles.
pub fn sbx_colima_home(cache: &Path) -> PathBuf {
    cache.join("colima")
}

/// Whether the longest Unix socket of a session VM under this Colima home fits: Lima's SSH
/// control socket `<home>/_lima/colima-sbx-<id>/ssh.sock.<16 characters>` (longer than Colima's
/// `<home>/sbx-<id>/docker.sock`). Lima refuses to create an instance otherwise.
pub fn colima_home_fits(home: &Path) -> bool {
    let sock = colima_lima_home(home, None)
        .join(colima_instance(&session_vm("00000000")))
        .join("ssh.sock.1234567890123456");
    sock.as_os_str().len() < UNIX_PATH_MAX
}

/// sbx's Colima installation: the `colima` program run with sbx's own homes.
#[derive(Debug, Clone)]
pub struct Colima {
    /// `COLIMA_HOME` for every call (symlinks resolved, as Lima measures socket paths on them).
    pub home: PathBuf,
    /// `--vm-type`, only where Colima has the flag.
    pub vm_type: Option<&'static str>,
}

impl Colima {
    pub fn lima_home(&self) -> PathBuf {
        // sbx sets `LIMA_HOME` itself (below), so Colima's rule gives `<home>/_lima`.
        colima_lima_home(&self.home, None)
    }

    /// Where Colima's `docker context create` writes (Colima registers a context for every
    /// profile, whatever `--activate` says, and removes it on delete).
    pub fn docker_config(&self) -> PathBuf {
        self.home.join("docker")
    }

    /// Removes the docker context Colima registered for an instance from sbx's docker
    /// configuration (`contexts/meta/<sha256 of the name>`, as the docker CLI stores it).
    fn remove_context(&self, instance: &str) {
        use sha2::Digest;
        let id = hex::encode(sha2::Sha256::digest(instance.as_bytes()));
        for kind in ["meta", "tls"] {
            let _ =
                std::fs::remove_dir_all(self.docker_config().join("contexts").join(kind).join(&id));
        }
    }

    fn cmd(&self) -> Cmd {
        Cmd::new("colima")
            // Colima's own variables, and Lima's, which it passes on to `limactl`.
            .inherit(&[crate::env::COLIMA_ALL, crate::env::LIMA_ALL])
            .inherit(crate::env::PROXIES)
            .env("COLIMA_HOME", &self.home)
            // Colima obeys `LIMA_HOME` when it is set: the user's would bring its
            // `_config/default.yaml` and `override.yaml` (mounts, provisioning) into session VMs.
            .env("LIMA_HOME", self.lima_home())
            .env("DOCKER_CONFIG", self.docker_config())
            .env_remove("COLIMA_PROFILE")
    }
}

/// Makes sbx's Colima home: a private folder (Colima uses `COLIMA_HOME` only when it exists, and
/// falls back to the user's `~/.colima` otherwise), its path with symlinks resolved and short
/// enough for the VMs' sockets, and Lima's override file in its Lima home.
fn prepare_home(cache: &Path) -> Result<PathBuf, VmError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let home = sbx_colima_home(cache);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| VmError::Home { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&home)
        .map_err(io(&home))?;
    let meta = std::fs::symlink_metadata(&home).map_err(io(&home))?;
    if !meta.is_dir() || meta.uid() != rustix::process::getuid().as_raw() {
        return Err(VmError::Home {
            path: home,
            source: std::io::Error::other("it is not a folder of your own"),
        });
    }
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).map_err(io(&home))?;
    let home = std::fs::canonicalize(&home).map_err(io(&home))?;
    if !colima_home_fits(&home) {
        return Err(VmError::ColimaHomeTooLong { home });
    }
    let config = colima_lima_home(&home, None).join("_config");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config)
        .map_err(io(&config))?;
    let file = config.join("override.yaml");
    let mut tmp = tempfile::NamedTempFile::new_in(&config).map_err(io(&config))?;
    std::io::Write::write_all(&mut tmp, LIMA_OVERRIDE.as_bytes()).map_err(io(&file))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(io(&file))?;
    tmp.persist(&file).map_err(|e| VmError::Home {
        path: file.clone(),
        source: e.error,
    })?;
    Ok(home)
}

/// Which OS this is, and on macOS its version (as Colima reads it: `sw_vers -productVersion`).
async fn host_os() -> HostOs {
    if !cfg!(target_os = "macos") {
        return HostOs::Linux;
    }
    let out = Cmd::new("sw_vers")
        .arg("-productVersion")
        .timeout(Duration::from_secs(10))
        .run()
        .await
        .ok();
    HostOs::MacOs(out.as_deref().and_then(parse_macos_version))
}

impl Lima {
    /// Checks what a Colima session needs before anything is made: not root (Colima drives
    /// `limactl`, which refuses root), sbx's own Colima home, Colima 0.10.0 or newer, and Lima
    /// recent enough for sbx.
    pub async fn locate_colima(cache: &Path) -> Result<Lima, VmError> {
        if rustix::process::getuid().is_root() {
            return Err(VmError::Root);
        }
        // The home exists before Colima first runs: even `colima version` makes its home folder,
        // which would otherwise be the user's.
        let home = prepare_home(cache)?;
        let colima = Colima {
            home,
            vm_type: colima_vm_type(host_os().await),
        };
        let out = colima
            .cmd()
            .arg("version")
            .timeout(Duration::from_secs(60))
            .run()
            .await?;
        match parse_colima_version(&out) {
            Some(v) if v >= MIN_COLIMA => {}
            _ => {
                let found = out
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("colima version "))
                    .map(|v| crate::text::printable(v.trim()))
                    .unwrap_or_else(|| "(unknown version)".into());
                return Err(VmError::ColimaTooOld { found });
            }
        }
        let lima = Lima {
            program: "limactl".into(),
            home: colima.lima_home(),
            colima: Some(colima),
            // Set by `Lima::locate`.
            pins: PathBuf::new(),
        };
        lima.check_version().await?;
        Ok(lima)
    }

    fn colima(&self) -> Result<&Colima, VmError> {
        self.colima.as_ref().ok_or_else(|| VmError::Command {
            command: "colima".into(),
            message: "this VM installation is Lima, not Colima".into(),
        })
    }

    /// Boots a session's own Colima profile (Colima has no supported clone, so every session
    /// boots from scratch: slower than Lima) and returns its Lima instance.
    pub async fn colima_start(
        &self,
        profile: &str,
        settings: &VmSettings,
        mounts: &[VmMount],
    ) -> Result<Instance, VmError> {
        let colima = self.colima()?;
        let a = colima_start_args(profile, settings, mounts, colima.vm_type)?;
        colima
            .cmd()
            .args(&a)
            .timeout(Duration::from_secs(1800))
            .run()
            .await
            .map_err(|e| VmError::Boot {
                name: profile.to_owned(),
                message: VmError::from(e).to_string(),
            })?;
        match self.get(&colima_instance(profile)).await? {
            Some(i) if i.status == "Running" && i.ssh_local_port > 0 => Ok(i),
            Some(i) => Err(VmError::Boot {
                name: profile.to_owned(),
                message: format!("Colima's instance is `{}`", i.status),
            }),
            None => Err(VmError::Boot {
                name: profile.to_owned(),
                message: "Colima reports no instance for it".into(),
            }),
        }
    }

    /// Deletes a profile with its data disk and docker context (a missing one is fine), without
    /// letting the VM steer the host. Colima's `delete` of a *running* profile first asks the VM
    /// which runtime it runs (`/etc/colima/colima.json` inside it) and runs that runtime's
    /// host-side teardown: for `kubernetes`, `kubectl config unset` on your kubeconfig; for
    /// `incus`, `sudo route delete` and `incus remote` changes. A session VM is the agent's (a
    /// container escape lands there), so it is removed with Lima first, which only kills and
    /// deletes on the host; Colima then finds nothing running and removes the profile's settings
    /// and data disk without asking the VM. The docker context the skipped teardown would have
    /// removed is sbx's own (see [`Colima::docker_config`]) and is removed here.
    pub async fn colima_delete(&self, profile: &str) -> Result<(), VmError> {
        let colima = self.colima()?;
        let instance = colima_instance(profile);
        self.delete(&instance).await?;
        colima
            .cmd()
            .args(colima_delete_args(profile))
            .timeout(Duration::from_secs(300))
            .run()
            .await?;
        colima.remove_context(&instance);
        Ok(())
    }

    /// The profiles of sessions in sbx's Colima home (`sbx-<id>`, from `colima-sbx-<id>`).
    pub async fn colima_session_profiles(&self) -> Result<Vec<String>, VmError> {
        let prefix = colima_instance(&session_vm(""));
        Ok(self
            .list_prefixed(&prefix)
            .await?
            .into_iter()
            .filter_map(|i| i.name.strip_prefix("colima-").map(str::to_owned))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VmProvider;
    use crate::error::Hint;

    fn settings() -> VmSettings {
        VmSettings {
            provider: VmProvider::Colima,
            cpus: 4,
            memory_gib: 8.0,
            disk_gib: 64.0,
        }
    }

    fn mount(path: &str, writable: bool) -> VmMount {
        VmMount {
            path: path.into(),
            writable,
        }
    }

    #[test]
    fn start_arguments() {
        let m = [
            mount("/s/abc", true),
            mount("/code/app/.git/objects", false),
        ];
        let a = colima_start_args("sbx-abc", &settings(), &m, None).unwrap();
        assert_eq!(
            a,
            [
                "start",
                "--profile",
                "sbx-abc",
                "--activate=false",
                "--ssh-config=false",
                "--template=false",
                "--runtime",
                "docker",
                "--port-forwarder=none",
                "--cpus",
                "4",
                "--memory",
                "8",
                "--disk",
                "64",
                "--mount",
                "/s/abc:w",
                "--mount",
                "/code/app/.git/objects"
            ]
        );
        let a = colima_start_args("p", &settings(), &[], Some("vz")).unwrap();
        let joined = a.join(" ");
        assert!(joined.contains("--vm-type vz"), "{joined}");
        assert!(joined.ends_with("--mount none"), "{joined}");
        assert_eq!(
            colima_delete_args("sbx-abc"),
            ["delete", "--profile", "sbx-abc", "--force", "--data"]
        );
    }

    #[test]
    fn disk_is_whole_gib_rounded_up_and_memory_may_be_fractional() {
        assert_eq!(colima_disk_gib(64.0), 64);
        assert_eq!(colima_disk_gib(64.2), 65);
        assert_eq!(colima_disk_gib(0.5), 1);
        assert_eq!(colima_disk_gib(f64::NAN), 1);
        let s = VmSettings {
            memory_gib: 1.5,
            disk_gib: 10.5,
            ..settings()
        };
        let a = colima_start_args("p", &s, &[], None).unwrap();
        let at = |flag: &str| a[a.iter().position(|x| x == flag).unwrap() + 1].clone();
        assert_eq!(at("--disk"), "11");
        assert_eq!(at("--memory"), "1.5");
    }

    #[test]
    fn vm_type_only_on_macos_13_or_newer() {
        assert_eq!(colima_vm_type(HostOs::Linux), None);
        assert_eq!(colima_vm_type(HostOs::MacOs(Some((12, 7)))), None);
        assert_eq!(colima_vm_type(HostOs::MacOs(None)), None);
        assert_eq!(colima_vm_type(HostOs::MacOs(Some((13, 0)))), Some("vz"));
        assert_eq!(colima_vm_type(HostOs::MacOs(Some((26, 1)))), Some("vz"));
        assert_eq!(parse_macos_version("14.5\n"), Some((14, 5)));
        assert_eq!(parse_macos_version("13.0.1"), Some((13, 0)));
        assert_eq!(parse_macos_version("26"), Some((26, 0)));
        assert_eq!(parse_macos_version("ProductVersion: 14"), None);
        let a = colima_start_args("p", &settings(), &[], colima_vm_type(HostOs::Linux)).unwrap();
        assert!(!a.iter().any(|x| x.contains("vm-type")), "{a:?}");
    }

    #[test]
    fn colima_versions() {
        let release = "colima version v0.10.3\ngit commit: 490420d\n\nruntime: docker\narch: aarch64\nclient: v28.3.2\nserver: v28.3.2\n";
        assert_eq!(parse_colima_version(release), Some((0, 10, 3)));
        assert_eq!(
            parse_colima_version("colima version 0.10.0\ngit commit: x\n"),
            Some((0, 10, 0))
        );
        assert_eq!(
            parse_colima_version("colima version v0.10.1-3-g1a2b3c4\n"),
            Some((0, 10, 1))
        );
        assert_eq!(
            parse_colima_version("colima version v1.0\n"),
            Some((1, 0, 0))
        );
        assert_eq!(parse_colima_version("colima version development\n"), None);
        assert_eq!(parse_colima_version(""), None);
        assert!(parse_colima_version("colima version v0.9.1\n").unwrap() < MIN_COLIMA);
        assert!(parse_colima_version("colima version v0.10.0\n").unwrap() >= MIN_COLIMA);
        let e = VmError::ColimaTooOld {
            found: "v0.9.1".into(),
        };
        assert!(e.to_string().contains("0.10.0"), "{e}");
        assert!(e.hint().unwrap().contains("brew upgrade colima"));
    }

    #[test]
    fn mounts_colima_cannot_express_are_refused() {
        assert_eq!(colima_mount_arg(&mount("/a/b", true)).unwrap(), "/a/b:w");
        assert_eq!(colima_mount_arg(&mount("/a/b", false)).unwrap(), "/a/b");
        for bad in [
            "/a/my:repo",
            "/a/x,y",
            "/a/with space",
            "/a/\"q\"",
            "/a/new\nline",
            "relative/path",
        ] {
            let e = colima_mount_arg(&mount(bad, false)).unwrap_err();
            assert!(matches!(e, VmError::ColimaMount { .. }), "{bad}: {e}");
        }
        assert!(check_colima_mounts(&[mount("/ok", true), mount("/b:c", false)]).is_err());
        assert!(colima_start_args("p", &settings(), &[mount("/b:c", false)], None).is_err());
    }

    #[test]
    fn profiles_and_homes() {
        assert_eq!(colima_instance("sbx-abc"), "colima-sbx-abc");
        assert_eq!(colima_instance("colima-x"), "colima-x");
        assert_eq!(colima_instance("default"), "colima");
        assert_eq!(colima_instance(""), "colima");
        assert_eq!(
            colima_lima_home(Path::new("/h/.colima"), None),
            Path::new("/h/.colima/_lima")
        );
        assert_eq!(
            colima_lima_home(Path::new("/h/.colima"), Some(OsStr::new(""))),
            Path::new("/h/.colima/_lima")
        );
        assert_eq!(
            colima_lima_home(Path::new("/h/.colima"), Some(OsStr::new("/l"))),
            Path::new("/l")
        );
        assert_eq!(
            sbx_colima_home(Path::new("/Users/alice/.cache/sbx")),
            Path::new("/Users/alice/.cache/sbx/colima")
        );
    }

    #[test]
    fn socket_budget() {
        // `<home>/_lima/colima-sbx-12345678/ssh.sock.<16>` is the home plus 52 bytes.
        assert!(colima_home_fits(Path::new(
            "/Users/alice/.cache/sbx/colima"
        )));
        let limit = UNIX_PATH_MAX - 1 - 52;
        let fits = format!("/{}", "x".repeat(limit - 1));
        let too_long = format!("/{}", "x".repeat(limit));
        assert!(colima_home_fits(Path::new(&fits)));
        assert!(!colima_home_fits(Path::new(&too_long)));
        let e = VmError::ColimaHomeTooLong {
            home: too_long.into(),
        };
        assert!(e.hint().unwrap().contains("XDG_CACHE_HOME"));
    }

    #[test]
    fn override_ignores_every_guest_port_and_forwards_no_agent() {
        let v: serde_json::Value = serde_saphyr::from_str(LIMA_OVERRIDE).unwrap();
        let rules = v["portForwards"].as_array().unwrap();
        assert_eq!(rules.len(), 2);
        assert!(
            rules
                .iter()
                .all(|r| r["ignore"] == true && r["proto"] == "any")
        );
        assert_eq!(rules[0]["guestIP"], "0.0.0.0");
        assert_eq!(rules[1]["guestIP"], "127.0.0.1");
        assert_eq!(v["ssh"]["forwardAgent"], false);
        assert!(v.get("mounts").is_none());
    }

    #[test]
    fn prepared_home_is_private_and_carries_the_override() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let home = prepare_home(d.path()).unwrap();
        assert_eq!(home, d.path().canonicalize().unwrap().join("colima"));
        let mode = std::fs::metadata(&home).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let o = std::fs::read_to_string(home.join("_lima/_config/override.yaml")).unwrap();
        assert_eq!(o, LIMA_OVERRIDE);
        // Idempotent, and a loosened mode is tightened again.
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare_home(d.path()).unwrap();
        let mode = std::fs::metadata(&home).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
