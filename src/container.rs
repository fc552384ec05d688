//! The session's containers as plans: pure functions from a session's facts to the gate's and the
//! agent's container specs (user, capabilities, mounts, limits, labels). The engine module turns a
//! spec into API calls; everything security-relevant is decided, and snapshot-tested, here.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::firewall::{GATE_CONF_DIR, GATE_LOG_DIR};
use crate::worktree::Mount;

pub const SESSION_LABEL: &str = "dev.sbx.session";
pub const ROLE_LABEL: &str = "dev.sbx.role";
/// Which sbx installation (session folder) made a container or network: `sbx gc` only ever
/// removes its own, never another user's or another HOME's sessions on a shared engine.
pub const OWNER_LABEL: &str = "dev.sbx.owner";
pub const AGENT_HOME: &str = "/home/agent";

/// One container to create.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// `uid:gid`
    pub user: String,
    pub cmd: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub mounts: Vec<Mount>,
    /// Engine volumes: `(volume name, mount point)`, read-write.
    pub volumes: Vec<(String, String)>,
    pub cap_add: Vec<String>,
    /// Always `ALL`: capabilities are granted, never inherited.
    pub cap_drop: Vec<String>,
    pub security_opt: Vec<String>,
    /// A network name, or `container:<name>` to join another container's namespace.
    pub network_mode: String,
    pub hostname: Option<String>,
    /// Extra names on `network_mode`'s network.
    pub aliases: Vec<String>,
    pub dns: Vec<String>,
    pub sysctls: BTreeMap<String, String>,
    pub memory: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub pids_limit: i64,
    pub init: bool,
    pub working_dir: Option<String>,
    /// The image's filesystem is read-only; only mounts and `tmpfs` are writable.
    pub read_only_rootfs: bool,
    /// In-memory filesystems: container path to mount options (size, mode, owner).
    pub tmpfs: BTreeMap<String, String>,
    /// The engine's logging driver for the container's own output (`None`: the engine's).
    pub log_driver: Option<String>,
    /// The engine removes the container once it stops (a spare gate that expired).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub auto_remove: bool,
}

/// What the gate's plan depends on (nothing of the checkouts, so it can start early).
#[derive(Debug, Clone)]
pub struct GateInputs {
    pub session_id: String,
    /// The [`OWNER_LABEL`] value.
    pub owner: String,
    pub image: String,
    /// The network the gate joins (sbx's network, or `--network`).
    pub network: String,
    pub session_dir: PathBuf,
    pub dns: Vec<IpAddr>,
    /// For a gate started ahead of its session (`spare`): how many seconds it waits to be
    /// claimed before it stops itself.
    pub spare_for: Option<u64>,
}

/// Everything the agent's plan depends on.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub gate: GateInputs,
    pub agent_image: String,
    pub uid: u32,
    pub gid: u32,
    /// Checkout mounts (`/workspace/<name>` and what git needs).
    pub mounts: Vec<Mount>,
    /// The session's copy of the user's Claude configuration (`claude::prepare`), mounted as
    /// the agent's `~/.claude`, when it is on.
    pub claude: Option<PathBuf>,
    pub cpus: f64,
    pub memory: u64,
    pub pids: i64,
    /// The folder the command starts in.
    pub working_dir: String,
    /// Package-cache volumes: `(volume name, mount point)`.
    pub caches: Vec<(String, String)>,
}

/// The network sbx's sessions share unless `--network` names another. Its containers cannot
/// talk to each other (inter-container traffic is off), and every gate drops incoming traffic,
/// so sessions cannot reach each other; sharing it saves creating and removing a network per
/// session.
pub const SHARED_NETWORK: &str = "sbx-sessions";

pub fn gate_name(session_id: &str) -> String {
    format!("sbx-{session_id}-gate")
}

pub fn agent_name(session_id: &str) -> String {
    format!("sbx-{session_id}-agent")
}

/// Session-folder paths shared by the planner and the code that writes the files.
pub fn gate_dir(session_dir: &Path) -> PathBuf {
    session_dir.join("gate")
}

pub fn log_dir(session_dir: &Path) -> PathBuf {
    session_dir.join("log")
}

pub fn gitconfig_path(session_dir: &Path) -> PathBuf {
    session_dir.join("home/gitconfig")
}

/// The agent's `/etc/passwd` and `/etc/group` ([`passwd`], [`group`]).
pub fn passwd_path(session_dir: &Path) -> PathBuf {
    session_dir.join("home/passwd")
}

pub fn group_path(session_dir: &Path) -> PathBuf {
    session_dir.join("home/group")
}

pub fn labels(session_id: &str, owner: &str, role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (SESSION_LABEL.to_owned(), session_id.to_owned()),
        (OWNER_LABEL.to_owned(), owner.to_owned()),
        (ROLE_LABEL.to_owned(), role.to_owned()),
    ])
}

fn bind(host: impl Into<PathBuf>, container: &str, read_only: bool) -> Mount {
    Mount {
        host: host.into(),
        container: PathBuf::from(container),
        read_only,
    }
}

/// The gate: root, but holding only NET_ADMIN and NET_RAW (firewall, ipsets, NFLOG) and
/// NET_BIND_SERVICE (the DNS filter's port 53), never running agent code. It owns the network
/// namespace so the agent never needs those powers.
///
/// Its privileges are capabilities of its own, never settings of the namespace: the agent shares
/// the namespace, so a namespace-wide `net.ipv4.ip_unprivileged_port_start=0` would let the agent
/// bind port 53 on the engine resolver's address and answer the filter's upstream queries itself
/// (putting any address into the allowed sets), or bind beside the filter and take its queries.
/// Docker (20.10 and later) sets exactly that by default for every container's namespace, so the
/// gate sets it back to the kernel's 1024: below that, only a capability may bind.
pub fn gate(i: &GateInputs) -> ContainerSpec {
    ContainerSpec {
        name: gate_name(&i.session_id),
        image: i.image.clone(),
        user: "0:0".into(),
        cmd: match i.spare_for {
            None => vec!["/usr/local/lib/sbx/gate".into()],
            Some(s) => vec![
                "/usr/local/lib/sbx/gate".into(),
                "spare".into(),
                s.to_string(),
            ],
        },
        labels: labels(&i.session_id, &i.owner, "gate"),
        mounts: vec![
            bind(gate_dir(&i.session_dir), GATE_CONF_DIR, true),
            bind(log_dir(&i.session_dir), GATE_LOG_DIR, false),
        ],
        volumes: Vec::new(),
        cap_add: vec![
            "NET_ADMIN".into(),
            "NET_BIND_SERVICE".into(),
            "NET_RAW".into(),
        ],
        cap_drop: vec!["ALL".into()],
        security_opt: vec!["no-new-privileges:true".into()],
        network_mode: i.network.clone(),
        hostname: Some(format!("sbx-{}", i.session_id)),
        aliases: Vec::new(),
        dns: i.dns.iter().map(ToString::to_string).collect(),
        sysctls: BTreeMap::from([(
            "net.ipv4.ip_unprivileged_port_start".to_owned(),
            "1024".to_owned(),
        )]),
        memory: Some(128 << 20),
        nano_cpus: Some(500_000_000),
        pids_limit: 64,
        init: true,
        working_dir: None,
        read_only_rootfs: false,
        tmpfs: BTreeMap::new(),
        log_driver: None,
        // A spare gate nobody claims stops itself, and then nothing of it stays, even when the
        // HOME that made it is gone (and with it every `sbx gc` that would look for it).
        auto_remove: i.spare_for.is_some(),
    }
}

/// The agent: the host user's uid/gid (never root), no capability at all, no way to gain one,
/// limits that fit the engine, and the gate's network namespace.
///
/// Its image's filesystem is read-only, so the agent cannot fill the engine's disk through the
/// container's writable layer (most storage drivers cannot bound its size): what it may write
/// is its checkouts, its Claude configuration copy, and scratch space in memory (home, `/tmp`),
/// each sized to the memory limit, whose cgroup bounds them all together.
pub fn agent(i: &Inputs) -> ContainerSpec {
    let g = &i.gate;
    let mut mounts = i.mounts.clone();
    mounts.push(bind(
        gate_dir(&g.session_dir).join("resolv.conf"),
        "/etc/resolv.conf",
        true,
    ));
    mounts.push(bind(gitconfig_path(&g.session_dir), "/etc/gitconfig", true));
    // The agent's account comes from sbx, not the image, so one image serves every uid.
    mounts.push(bind(passwd_path(&g.session_dir), "/etc/passwd", true));
    mounts.push(bind(group_path(&g.session_dir), "/etc/group", true));
    if let Some(dir) = &i.claude {
        mounts.push(bind(dir, &format!("{AGENT_HOME}/.claude"), false));
    }
    let scratch = |mode: &str| {
        format!(
            "rw,exec,nosuid,nodev,size={},mode={mode},uid={},gid={}",
            i.memory, i.uid, i.gid
        )
    };
    let tmpfs = BTreeMap::from([
        (AGENT_HOME.to_owned(), scratch("0700")),
        ("/tmp".to_owned(), scratch("1777")),
        ("/var/tmp".to_owned(), scratch("1777")),
        ("/workspace".to_owned(), scratch("0755")),
    ]);
    ContainerSpec {
        name: agent_name(&g.session_id),
        image: i.agent_image.clone(),
        user: format!("{}:{}", i.uid, i.gid),
        cmd: vec!["sleep".into(), "infinity".into()],
        labels: labels(&g.session_id, &g.owner, "agent"),
        mounts,
        volumes: i.caches.clone(),
        cap_add: Vec::new(),
        cap_drop: vec!["ALL".into()],
        security_opt: vec!["no-new-privileges:true".into()],
        network_mode: format!("container:{}", gate_name(&g.session_id)),
        hostname: None,
        aliases: Vec::new(),
        dns: Vec::new(),
        sysctls: BTreeMap::new(),
        memory: Some(i.memory as i64),
        nano_cpus: Some((i.cpus * 1e9) as i64),
        pids_limit: i.pids,
        init: true,
        working_dir: Some(i.working_dir.clone()),
        read_only_rootfs: true,
        tmpfs,
        // The agent owns its PID 1 and could write without end to its stdout, which the engine
        // would keep in a log file on its disk; the command's output goes through the exec.
        log_driver: Some("none".into()),
        auto_remove: false,
    }
}

/// The agent's `/etc/passwd`: root, nobody and the agent at its uid/gid, home `/home/agent`.
pub fn passwd(uid: u32, gid: u32) -> String {
    format!(
        "root:x:0:0:root:/root:/usr/sbin/nologin\n\
         agent:x:{uid}:{gid}:sbx agent:{AGENT_HOME}:/bin/bash\n\
         nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
}

/// The agent's `/etc/group`.
pub fn group(gid: u32) -> String {
    format!("root:x:0:\nagent:x:{gid}:\nnogroup:x:65534:\n")
}

/// The most CPUs a session gets when no setting names a number.
pub const DEFAULT_CPUS_CEILING: f64 = 4.0;

/// The most memory a session gets when no setting names an amount.
pub const DEFAULT_MEMORY_CEILING: u64 = 8 << 30;
/// The least memory the default gives the agent (half the engine's, at least this).
pub const DEFAULT_MEMORY_FLOOR: u64 = 512 << 20;

/// The agent's CPU limit: the setting, or up to 4, never more than the engine has.
pub fn cpus(setting: Option<f64>, engine_cpus: u32) -> f64 {
    let engine = f64::from(engine_cpus.max(1));
    setting.unwrap_or(DEFAULT_CPUS_CEILING).min(engine)
}

/// The agent's memory limit: the setting, or half the engine's memory, at most 8 GiB.
pub fn memory(setting: Option<u64>, engine_memory: u64) -> u64 {
    setting
        .unwrap_or_else(|| (engine_memory / 2).clamp(DEFAULT_MEMORY_FLOOR, DEFAULT_MEMORY_CEILING))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Inputs {
        Inputs {
            gate: GateInputs {
                session_id: "abc123".into(),
                spare_for: None,
                owner: "0123456789ab".into(),
                image: "sbx-gate:latest".into(),
                network: "sbx-sessions".into(),
                session_dir: "/home/u/.cache/sbx/sessions/abc123".into(),
                dns: vec![],
            },
            agent_image: "sbx-sandbox:latest".into(),
            uid: 501,
            gid: 20,
            caches: vec![("sbx-cache-0123456789abcdef-npm".into(), "/cache/npm".into())],
            mounts: vec![
                Mount {
                    host: "/home/u/.cache/sbx/sessions/abc123/repos/app".into(),
                    container: "/workspace/app".into(),
                    read_only: false,
                },
                Mount {
                    host: "/home/u/code/app/.git/objects".into(),
                    container: "/home/u/code/app/.git/objects".into(),
                    read_only: true,
                },
            ],
            claude: Some("/home/u/.cache/sbx/sessions/abc123/claude".into()),
            cpus: 2.0,
            memory: 4 << 30,
            pids: 4096,
            working_dir: "/workspace/app".into(),
        }
    }

    #[test]
    fn agent_spec_snapshot() {
        insta::assert_yaml_snapshot!(agent(&inputs()));
    }

    #[test]
    fn gate_spec_snapshot() {
        insta::assert_yaml_snapshot!(gate(&inputs().gate));
    }

    #[test]
    fn agent_holds_no_capability_and_is_not_root() {
        let a = agent(&inputs());
        assert!(a.cap_add.is_empty());
        assert_eq!(a.cap_drop, ["ALL"]);
        assert!(
            a.security_opt
                .contains(&"no-new-privileges:true".to_owned())
        );
        assert!(!a.user.starts_with("0:"));
        assert!(a.network_mode.starts_with("container:"));
        let g = gate(&inputs().gate);
        assert_eq!(g.cap_add, ["NET_ADMIN", "NET_BIND_SERVICE", "NET_RAW"]);
    }

    #[test]
    fn the_agent_writes_only_mounts_and_bounded_scratch() {
        let a = agent(&inputs());
        assert!(a.read_only_rootfs);
        for (path, opts) in &a.tmpfs {
            assert!(
                opts.contains(&format!("size={}", 4u64 << 30)) && opts.contains("uid=501"),
                "{path}: {opts}"
            );
        }
        assert!(a.tmpfs.contains_key(AGENT_HOME) && a.tmpfs.contains_key("/tmp"));
    }

    #[test]
    fn the_gate_leaves_low_ports_privileged() {
        // A namespace-wide setting applies to the agent too (it shares the namespace); the
        // engine's default would open every port to it.
        assert_eq!(
            gate(&inputs().gate).sysctls,
            BTreeMap::from([(
                "net.ipv4.ip_unprivileged_port_start".to_owned(),
                "1024".to_owned()
            )])
        );
    }

    #[test]
    fn the_agent_account_has_the_agent_ids() {
        assert!(passwd(501, 20).contains("agent:x:501:20:"));
        assert!(group(20).contains("agent:x:20:"));
    }

    #[test]
    fn limits_fit_the_engine() {
        assert_eq!(cpus(None, 2), 2.0);
        assert_eq!(cpus(None, 16), 4.0);
        assert_eq!(cpus(Some(8.0), 2), 2.0);
        assert_eq!(cpus(Some(0.5), 2), 0.5);
        assert_eq!(memory(None, 24 << 30), 8 << 30);
        assert_eq!(memory(None, 4 << 30), 2 << 30);
        assert_eq!(memory(Some(1 << 30), 4 << 30), 1 << 30);
    }
}
