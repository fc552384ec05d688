//! The gate as sbx drives it, beside its container spec (`container::gate`): the files it
//! mounts (the firewall plan, the agent's resolver, its logs), its report that the firewall is in
//! place, and reloading its plan (`sbx allow`, a session claiming a spare gate). Also the writer
//! of every planned file a session's containers mount.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;

use crate::container;
use crate::engine::{EngineApi, OutputStream};

/// A file the gate or the agent mounts, written before either starts.
#[derive(Debug, Clone, PartialEq)]
pub struct File {
    pub path: PathBuf,
    pub text: String,
    pub mode: u32,
}

/// The gate's configuration, from the allowlist (also rewritten by `sbx allow`).
pub fn files(dir: &Path, entries: &[crate::allowlist::Entry]) -> Vec<File> {
    let plan = crate::firewall::plan(entries);
    let gate = container::gate_dir(dir);
    [
        ("ipset.rules", plan.ipset),
        ("iptables.rules", plan.iptables),
        ("ip6tables.rules", plan.ip6tables),
        ("dnsmasq.conf", plan.dnsmasq),
        ("ulogd.conf", plan.ulogd),
        ("resolv.conf", plan.agent_resolv_conf),
        ("log-limit", crate::firewall::LOG_LIMIT_BYTES.to_string()),
    ]
    .into_iter()
    .map(|(name, text)| File {
        path: gate.join(name),
        text,
        mode: 0o644,
    })
    .collect()
}

/// The gate's logs, empty (a spare's, claimed, are emptied: its start is no part of the
/// session). The gate writes them as a root without `CAP_DAC_OVERRIDE`, hence 0666.
pub fn log_files(dir: &Path) -> Vec<File> {
    let logs = container::log_dir(dir);
    [
        "dns.log",
        "dns.log.1",
        "refused.log",
        "refused.log.1",
        "ulogd.log",
        "ulogd.log.1",
    ]
    .into_iter()
    .map(|f| File {
        path: logs.join(f),
        text: String::new(),
        mode: 0o666,
    })
    .collect()
}

/// Writes the planned files, making their folders; the gate's folder is readable by the gate's
/// root without `CAP_DAC_OVERRIDE` (0755).
pub fn write(dir: &Path, files: &[File]) -> anyhow::Result<()> {
    let gate = container::gate_dir(dir);
    for f in files {
        if let Some(parent) = f.path.parent() {
            std::fs::create_dir_all(parent)?;
            if parent == gate {
                set_mode(parent, 0o755)?;
            }
        }
        std::fs::write(&f.path, &f.text)?;
        set_mode(&f.path, f.mode)?;
    }
    Ok(())
}

/// (Re)writes the gate's configuration from the allowlist (`sbx allow`, a spare).
pub fn write_gate_files(dir: &Path, entries: &[crate::allowlist::Entry]) -> anyhow::Result<()> {
    write(dir, &files(dir, entries))
}

/// Empties the gate's logs (a spare's, claimed, are emptied: its start is no part of the
/// session).
pub fn write_log_files(dir: &Path) -> anyhow::Result<()> {
    write(dir, &log_files(dir))
}

fn set_mode(p: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}

/// Has a running gate load its session's plan again (`gate reload`): after `sbx allow`, and when a
/// session claims a spare gate.
pub async fn reload<E: EngineApi>(engine: &E, gate: &str) -> anyhow::Result<()> {
    let (code, out) = engine
        .exec_output(
            gate,
            vec!["/usr/local/lib/sbx/gate".into(), "reload".into()],
            "0:0",
        )
        .await?;
    if code != 0 || !out.contains("sbx-gate: reloaded") {
        bail!("the gate could not load the plan:\n{}", out.trim());
    }
    Ok(())
}

/// Waits for the gate to report its firewall and DNS filter in place.
pub async fn wait_for_gate(mut output: OutputStream) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    let mut seen = String::new();
    let wait = async {
        while let Some(Ok(chunk)) = output.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("sbx-gate: ready") {
                return true;
            }
            if seen.contains("sbx-gate: error") {
                return false;
            }
        }
        false
    };
    let ok = tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        bail!(
            "the session's firewall could not be set up:\n{}",
            seen.trim()
        )
    }
}
