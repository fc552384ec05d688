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
    }
}

/// Where sbx pins guests' SSH host keys.
pub fn known_hosts(cache: &Path) -> PathBuf {
    cache.join("known_hosts")
}

/// SSH into a Lima instance and forward its Docker socket to `socket`.
pub async fn connect_instance(
    lima: &Lima,
    inst: &Instance,
    cache: &Path,
    socket: &Path,
) -> Result<Guest, SshError> {
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
    connect(&target, socket).await
}

/// SSH to a target (retrying while its sshd comes up) and forward its Docker socket.
pub async fn connect(target: &Target, socket: &Path) -> Result<Guest, SshError> {
    let mut last = None;
    for _ in 0..30 {
        match Session::connect(target).await {
            Ok(ssh) => {
                let forward = ssh.forward_unix(socket, GUEST_DOCKER_SOCKET)?;
                return Ok(Guest {
                    ssh,
                    forward,
                    socket: socket.to_owned(),
                });
            }
            Err(e @ SshError::Connect { .. }) => last = Some(e),
            Err(e) => return Err(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(last.unwrap_or(SshError::Connect {
        addr: format!("{}:{}", target.host, target.port),
        source: "no answer".into(),
    }))
}

/// Clones the golden VM for a session, boots it with only `mounts`, and connects.
pub async fn boot_session_vm(
    lima: &Lima,
    name: &str,
    mounts: &[VmMount],
    cache: &Path,
    socket: &Path,
) -> anyhow::Result<Guest> {
    match lima.get(crate::vm::GOLDEN).await? {
        Some(g) if g.status == "Stopped" => {}
        Some(g) => {
            return Err(VmError::Command {
                command: format!("limactl clone {}", crate::vm::GOLDEN),
                message: format!("the golden VM is `{}`, not stopped", g.status),
            }
            .into());
        }
        None => return Err(VmError::GoldenStale.into()),
    }
    ssh::forget(&known_hosts(cache), name);
    lima.clone_instance(crate::vm::GOLDEN, name, mounts).await?;
    let inst = lima.start(name, Duration::from_secs(300)).await?;
    Ok(connect_instance(lima, &inst, cache, socket).await?)
}

/// What a session VM mounts: the session folder, what the checkouts borrow from the host
/// repositories (read-only unless worktree mode). The agent's Claude configuration is a copy
/// inside the session folder; the user's own `~/.claude` is never mounted.
pub fn session_mounts(dir: &Path, checkouts: &[crate::worktree::Checkout]) -> Vec<VmMount> {
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
    out
}

/// The golden VM's recorded fingerprint (`<cache>/vm/golden.json`).
pub fn golden_state(vm_cache: &Path) -> Option<String> {
    let text = std::fs::read_to_string(vm_cache.join("golden.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("fingerprint")?.as_str().map(str::to_owned)
}

/// What the golden VM should be for these settings: its template and fingerprint.
pub fn golden_plan(settings: &crate::config::Settings) -> anyhow::Result<(String, String)> {
    let template = crate::vm::render_template(&settings.vm, crate::vm::default_vm_type());
    let images: Vec<String> = crate::image::specs(settings)?
        .into_iter()
        .map(|s| s.fingerprint)
        .collect();
    let fp = crate::vm::golden_fingerprint(&template, &images);
    Ok((template, fp))
}

pub async fn golden_is_current(
    lima: &crate::vm::Lima,
    vm_cache: &Path,
    settings: &crate::config::Settings,
) -> anyhow::Result<bool> {
    let (_, fp) = golden_plan(settings)?;
    Ok(golden_state(vm_cache).as_deref() == Some(fp.as_str())
        && lima.get(crate::vm::GOLDEN).await?.is_some())
}

/// A remote host from `ssh://user@host[:port]`, with the user's own SSH key.
pub fn remote_target(url: &str, home: &Path, cache: &Path) -> anyhow::Result<Target> {
    let rest = url
        .strip_prefix("ssh://")
        .ok_or_else(|| anyhow::anyhow!("`{url}` is not an `ssh://` address"))?;
    let (user, hostport) = match rest.split_once('@') {
        Some((u, h)) => (u.to_owned(), h),
        None => (
            std::env::var("USER").unwrap_or_else(|_| "root".into()),
            rest,
        ),
    };
    let hostport = hostport.trim_end_matches('/');
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h.to_owned(), p.parse()?),
        _ => (hostport.to_owned(), 22),
    };
    let key = std::env::var_os("SBX_SSH_KEY")
        .map(PathBuf::from)
        .or_else(|| {
            ["id_ed25519", "id_ecdsa", "id_rsa"]
                .iter()
                .map(|k| home.join(".ssh").join(k))
                .find(|p| p.exists())
        })
        .ok_or_else(|| {
            crate::commands::hinted(
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
