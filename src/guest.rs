//! The machine a session's containers run on when it is not the local engine: a VM cloned from
//! the golden one (`--vm`), or a remote Linux host (`--docker-host ssh://user@host`). Boots and
//! connects it, makes its Docker socket local through the SSH connection (so the container
//! session code drives it unchanged and tokens travel inside SSH only), and tears it down.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::ssh::{self, Session, SshError, Target};
use crate::vm::{Instance, Lima, VmError, VmMount};

/// The guest's Docker socket (rootful Docker Engine).
pub const GUEST_DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// A connected guest with its Docker socket forwarded to `socket`.
pub struct Guest {
    ssh: Session,
    forward: tokio::task::JoinHandle<()>,
    pub socket: PathBuf,
    /// The private folder holding `socket` when the preferred one was too long for it.
    socket_dir: Option<tempfile::TempDir>,
}

impl Guest {
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn ssh(&self) -> &Session {
        &self.ssh
    }

    /// Stops forwarding (the SSH connection closes when the guest is dropped).
    pub fn close(self) {
        self.forward.abort();
        let _ = std::fs::remove_file(&self.socket);
        drop(self.socket_dir);
    }

    /// Waits, within `limit`, until the guest's Docker answers: a VM's boot can finish before
    /// dockerd does (Lima's `start` returns when its boot scripts and probes are done).
    pub async fn wait_for_docker(&self, name: &str, limit: Duration) -> Result<(), VmError> {
        let began = std::time::Instant::now();
        loop {
            if crate::engine::Engine::connect(&self.endpoint())
                .await
                .is_ok()
            {
                return Ok(());
            }
            if began.elapsed() >= limit {
                return Err(VmError::DockerNotReady {
                    name: name.to_owned(),
                    secs: limit.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Proves that the guest shows each mount as the host's folder: it must read back the
    /// nonce written there on the host. Lima mounts with `nofail`, so a mount it could not make
    /// is silently an empty folder that Docker would then bind.
    pub async fn prove_mounts(&self, name: &str, nonces: &Nonces) -> anyhow::Result<()> {
        let mut script = String::new();
        for (path, nonce) in &nonces.planted {
            let file = path.join(&nonces.file);
            script.push_str(&format!(
                "[ \"$(cat -- {} 2>/dev/null)\" = {} ] || printf 'missing %s\\n' {}\n",
                shell_word(&file.to_string_lossy()),
                shell_word(nonce),
                shell_word(&path.to_string_lossy()),
            ));
        }
        let (code, out) = self.ssh.exec("sh -s", script.as_bytes()).await?;
        anyhow::ensure!(code == 0, "checking the VM's mounts failed: {}", out.trim());
        for line in out.lines() {
            if let Some(p) = line.strip_prefix("missing ") {
                return Err(VmError::MountMissing {
                    name: name.to_owned(),
                    path: p.into(),
                    why: "the folder there is not the host's (the mount was skipped)".into(),
                }
                .into());
            }
        }
        Ok(())
    }

    /// Shows each writable mount to the containers as owned by the agent's ids, whatever owner
    /// the guest's file sharing reports to the agent: Apple's virtiofs reports whoever asks (a
    /// folder Docker, as root, bound can look `root:root 0755` to the agent, which then cannot
    /// write its own checkout and git calls it dubious). A bindfs layer over the same path, run
    /// as the VM's login user (the host user's account there; never root, as it handles paths
    /// the agent controls), reports the agent's ids for everything below and does the work as
    /// that user.
    pub async fn share_mounts(
        &self,
        mounts: &[VmMount],
        (uid, gid): (u32, u32),
    ) -> anyhow::Result<()> {
        let mut script = String::from(
            "set -e\ncommand -v bindfs >/dev/null || { echo 'bindfs is missing: run `sbx setup --vm`' >&2; exit 3; }\n",
        );
        // Paths are absolute (bindfs takes no `--`): none can read as an option. The read-only
        // mounts (objects the checkouts borrow) need only reading, which any owner allows.
        for m in mounts.iter().filter(|m| m.writable && m.path.is_absolute()) {
            let p = shell_word(&m.path.to_string_lossy());
            script.push_str(&format!(
                "bindfs -o allow_other --force-user={uid} --force-group={gid} {p} {p}\n"
            ));
        }
        let (code, out) = self.ssh.exec("sh -s", script.as_bytes()).await?;
        anyhow::ensure!(
            code == 0,
            "showing the session's folders to the agent inside the VM failed: {}",
            out.trim()
        );
        Ok(())
    }
}

/// A nonce file in each folder a VM mounts, removed when dropped.
pub struct Nonces {
    file: String,
    planted: Vec<(PathBuf, String)>,
}

impl Nonces {
    /// Writes `.sbx-mount-<id>` with a fresh random value into each mount (never over an
    /// existing file or through a symlink).
    pub fn plant(id: &str, mounts: &[VmMount]) -> std::io::Result<Nonces> {
        use std::io::Write;
        let mut n = Nonces {
            file: format!(".sbx-mount-{id}"),
            planted: Vec::new(),
        };
        for m in mounts {
            let mut bytes = [0u8; 16];
            std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
            let nonce = hex::encode(bytes);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(m.path.join(&n.file))?;
            n.planted.push((m.path.clone(), nonce.clone()));
            f.write_all(nonce.as_bytes())?;
        }
        Ok(n)
    }
}

impl Drop for Nonces {
    fn drop(&mut self) {
        for (p, _) in &self.planted {
            let _ = std::fs::remove_file(p.join(&self.file));
        }
    }
}

/// Where a forwarded Docker socket goes: `<dir>/docker.sock` when that fits in a Unix socket
/// address (104 bytes on macOS, 108 on Linux), else a fresh private folder (0700, random name)
/// under the runtime or temporary folder, so a long HOME never breaks VM mode.
pub fn socket_place(dir: &Path) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    let fits = |p: &Path| p.as_os_str().len() < crate::vm::UNIX_PATH_MAX;
    let here = dir.join("docker.sock");
    if fits(&here) {
        return Ok((here, None));
    }
    let bases = [crate::env::XDG_RUNTIME_DIR, crate::env::TMPDIR]
        .into_iter()
        .filter_map(crate::env::var_os)
        .map(PathBuf::from)
        .chain([PathBuf::from("/tmp")])
        .filter(|b| b.is_absolute() && b.is_dir());
    for base in bases {
        let Ok(t) = tempfile::Builder::new().prefix("sbx-").tempdir_in(&base) else {
            continue;
        };
        let p = t.path().join("docker.sock");
        if fits(&p) {
            return Ok((p, Some(t)));
        }
    }
    Err(crate::error::hinted(
        format!(
            "no folder for the VM's Docker socket is short enough (`{}` is {} bytes; the limit is {})",
            here.display(),
            here.as_os_str().len(),
            crate::vm::UNIX_PATH_MAX
        ),
        "set `TMPDIR` to a short folder of yours",
    ))
}

/// Quotes a word for a POSIX shell.
pub fn shell_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Where sbx pins guests' SSH host keys.
pub fn known_hosts(cache: &Path) -> PathBuf {
    cache.join("known_hosts")
}

/// SSH into a Lima instance and forward its Docker socket into `dir` (or a shorter private
/// folder, see [`socket_place`]).
pub async fn connect_instance(
    lima: &Lima,
    inst: &Instance,
    cache: &Path,
    dir: &Path,
) -> anyhow::Result<Guest> {
    let target = Target {
        host: inst
            .ssh_address
            .clone()
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| "127.0.0.1".into()),
        port: inst.ssh_local_port,
        user: inst.config.user.name.clone(),
        key: lima.key(),
        pin_name: inst.name.clone(),
        known_hosts: known_hosts(cache),
    };
    connect(&target, dir).await
}

/// SSH to a target (retrying while its sshd comes up) and forward its Docker socket into `dir`
/// (or a shorter private folder, see [`socket_place`]).
pub async fn connect(target: &Target, dir: &Path) -> anyhow::Result<Guest> {
    let (socket, socket_dir) = socket_place(dir)?;
    let mut last = None;
    for _ in 0..30 {
        match Session::connect(target).await {
            Ok(ssh) => {
                let forward = ssh.forward_unix(&socket, GUEST_DOCKER_SOCKET)?;
                return Ok(Guest {
                    ssh,
                    forward,
                    socket,
                    socket_dir,
                });
            }
            Err(e @ SshError::Connect { .. }) => last = Some(e),
            Err(e) => return Err(e.into()),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(last
        .unwrap_or(SshError::Connect {
            addr: format!("{}:{}", target.host, target.port),
            source: "no answer".into(),
        })
        .into())
}

/// Clones the golden VM for a session, boots it with only `mounts`, connects, and waits for its
/// Docker; `phase` hears when each step began (`vm clone`, `vm boot`, `vm connect`, `vm docker`).
pub async fn boot_session_vm(
    lima: &Lima,
    golden: &str,
    name: &str,
    mounts: &[VmMount],
    cache: &Path,
    dir: &Path,
    phase: &mut (dyn FnMut(&'static str, std::time::Instant) + Send),
) -> anyhow::Result<Guest> {
    use std::time::Instant;
    let began = Instant::now();
    match lima.get(golden).await? {
        Some(g) if g.status == "Stopped" => {}
        Some(g) => {
            return Err(VmError::Command {
                command: format!("limactl clone {golden}"),
                message: format!("the golden VM is `{}`, not stopped", g.status),
            }
            .into());
        }
        None => return Err(VmError::GoldenStale.into()),
    }
    ssh::forget(&known_hosts(cache), name);
    lima.clone_instance(golden, name, mounts).await?;
    phase("vm clone", began);
    let began = Instant::now();
    let inst = lima.start(name, Duration::from_secs(300)).await?;
    phase("vm boot", began);
    let began = Instant::now();
    let guest = connect_instance(lima, &inst, cache, dir).await?;
    phase("vm connect", began);
    let began = Instant::now();
    guest.wait_for_docker(name, DOCKER_READY_LIMIT).await?;
    phase("vm docker", began);
    Ok(guest)
}

/// How long sbx waits for a booted VM's Docker to answer.
pub const DOCKER_READY_LIMIT: Duration = Duration::from_secs(120);

/// What a session VM mounts: the session folder, what the checkouts borrow from the host
/// repositories (read-only unless worktree mode). The agent's Claude configuration is a copy
/// inside the session folder; the user's own `~/.claude` is never mounted.
pub fn session_mounts(
    dir: &Path,
    checkouts: &[crate::worktree::Checkout],
) -> Result<Vec<VmMount>, VmError> {
    let mut out = vec![VmMount {
        path: dir.to_owned(),
        writable: true,
    }];
    let mut add = |path: PathBuf, writable: bool| {
        if !out.iter().any(|m| m.path == path) {
            out.push(VmMount { path, writable });
        }
    };
    for c in checkouts {
        match c.mode {
            crate::config::GitMode::Worktree => add(c.common_dir.clone(), true),
            crate::config::GitMode::Isolated => {
                for o in crate::worktree::object_dirs(&c.common_dir) {
                    add(o, false);
                }
            }
        }
    }
    for m in &out {
        crate::vm::check_mount_path(&m.path)?;
    }
    Ok(out)
}

/// A remote host from `ssh://user@host[:port]`, with the user's own SSH key.
pub fn remote_target(url: &str, home: &Path, cache: &Path) -> anyhow::Result<Target> {
    let rest = url
        .strip_prefix("ssh://")
        .ok_or_else(|| anyhow::anyhow!("`{url}` is not an `ssh://` address"))?;
    let (user, hostport) = match rest.split_once('@') {
        Some((u, h)) => (u.to_owned(), h),
        None => (
            crate::env::var(crate::env::USER).unwrap_or_else(|| "root".into()),
            rest,
        ),
    };
    let hostport = hostport.trim_end_matches('/');
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h.to_owned(), p.parse()?),
        _ => (hostport.to_owned(), 22),
    };
    let key = crate::env::var_os(crate::env::SBX_SSH_KEY)
        .map(PathBuf::from)
        .or_else(|| {
            ["id_ed25519", "id_ecdsa", "id_rsa"]
                .iter()
                .map(|k| home.join(".ssh").join(k))
                .find(|p| p.exists())
        })
        .ok_or_else(|| {
            crate::error::hinted(
                format!("no SSH key for `{url}`"),
                "create one with `ssh-keygen -t ed25519`, or point `SBX_SSH_KEY` at yours",
            )
        })?;
    Ok(Target {
        pin_name: format!("host-{host}-{port}"),
        host,
        port,
        user,
        key,
        known_hosts: known_hosts(cache),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_targets() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join(".ssh")).unwrap();
        std::fs::write(d.path().join(".ssh/id_ed25519"), "k").unwrap();
        let t = remote_target("ssh://dev@build.example:2222", d.path(), d.path()).unwrap();
        assert_eq!(
            (t.user.as_str(), t.host.as_str(), t.port),
            ("dev", "build.example", 2222)
        );
        assert_eq!(t.key, d.path().join(".ssh/id_ed25519"));
        let t = remote_target("ssh://dev@build.example", d.path(), d.path()).unwrap();
        assert_eq!(t.port, 22);
        assert!(remote_target("tcp://x", d.path(), d.path()).is_err());
    }
}
