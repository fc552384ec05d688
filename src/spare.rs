//! A gate started ahead of the next session, so that session need not wait for one.
//!
//! After a session, sbx starts a detached helper (`sbx __spare`) that makes one *spare*: a folder
//! under `<cache>/spares/<id>` and a gate container `sbx-<id>-gate` running a plan that lets
//! nothing out (no allowlist entry, no name answered) and nothing of any session: no checkout,
//! no token, no agent. The next session whose gate would be the same (engine, gate image,
//! network, DNS servers, HOME) claims it: the folder is renamed to that session's folder (the
//! session takes the spare's id), the session writes its own plan there and the gate reloads it
//! (`gate reload`, as `sbx allow` does) before the agent container exists.
//!
//! A spare is claimable for [`TTL`]; after that its gate stops itself, and the next helper or
//! `sbx gc` removes it (it is labelled like a session's gate whose session is not alive). At most
//! one spare per key is kept; a helper that finds one ready does nothing.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::container;
use crate::engine::{Engine, EngineApi};
use crate::paths::Dirs;
use crate::state;

/// How long a spare can be claimed after it was made.
pub const TTL: Duration = Duration::from_secs(30 * 60);
/// A spare is not claimed this close to its end, so it cannot stop under a session.
const MARGIN: Duration = Duration::from_secs(60);
/// Written last, once the gate is ready: a folder without it is not (yet) a spare.
const READY_FILE: &str = "spare.json";

/// What must be equal for a session to use a spare gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    pub endpoint: String,
    /// The gate image's fingerprint tag.
    pub image: String,
    pub network: String,
    pub dns: Vec<IpAddr>,
    /// The HOME's owner tag (its containers' label).
    pub owner: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Ready {
    key: Key,
    /// Seconds since the epoch.
    made: u64,
}

pub fn root(dirs: &Dirs) -> PathBuf {
    dirs.cache.join("spares")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn read_ready(dir: &Path) -> Option<Ready> {
    let text = std::fs::read_to_string(dir.join(READY_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

fn claimable(r: &Ready, at: u64) -> bool {
    at.saturating_sub(r.made) + MARGIN.as_secs() < TTL.as_secs()
}

/// Takes a ready spare made for exactly this key: its folder becomes the session folder of the
/// returned id. The rename is atomic, so two sessions never take the same spare.
pub fn claim(dirs: &Dirs, key: &Key) -> Option<String> {
    let at = now();
    for entry in std::fs::read_dir(root(dirs)).ok()?.flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        if !state::valid_id(&id) {
            continue;
        }
        match read_ready(&entry.path()) {
            Some(r) if r.key == *key && claimable(&r, at) => {}
            _ => continue,
        }
        let target = dirs.session(&id);
        if state::create_private_dir(&dirs.sessions()).is_ok()
            && std::fs::rename(entry.path(), &target).is_ok()
        {
            // The gate must not stop itself now that it is a session's.
            let claimed = container::gate_dir(&target).join("claimed");
            if std::fs::write(&claimed, "").is_ok() {
                let _ = std::fs::remove_file(target.join(READY_FILE));
                return Some(id);
            }
        }
    }
    None
}

/// The lock of the spares folder: one helper (or `sbx gc`) at a time.
fn lock(root: &Path) -> std::io::Result<Option<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    state::create_private_dir(root)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(root.join(".lock"))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(file)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes spares: those that can no longer be claimed (or every one, with `all`). Only while
/// holding the lock, so a spare being made is never taken apart; returns how many went.
pub async fn remove(dirs: &Dirs, engine: &Engine, all: bool) -> anyhow::Result<usize> {
    let root = root(dirs);
    if !root.is_dir() {
        return Ok(0);
    }
    let Some(_lock) = lock(&root)? else {
        return Ok(0);
    };
    remove_locked(&root, engine, |r| {
        all || r.is_none_or(|r| !claimable(r, now()))
    })
    .await
}

async fn remove_locked(
    root: &Path,
    engine: &Engine,
    doomed: impl Fn(Option<&Ready>) -> bool,
) -> anyhow::Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(root)?.flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        if !state::valid_id(&id) || !doomed(read_ready(&entry.path()).as_ref()) {
            continue;
        }
        engine.remove_container(&container::gate_name(&id)).await?;
        std::fs::remove_dir_all(entry.path())?;
        n += 1;
    }
    Ok(n)
}

/// Makes a spare for `key` unless one is ready; first removes the spares that can no longer be
/// claimed. Returns the new spare's id. Does nothing when another helper is at work.
pub async fn make(dirs: &Dirs, engine: &Engine, key: &Key) -> anyhow::Result<Option<String>> {
    let root = root(dirs);
    let Some(_lock) = lock(&root)? else {
        return Ok(None);
    };
    remove_locked(&root, engine, |r| r.is_none_or(|r| !claimable(r, now()))).await?;
    let at = now();
    let ready = std::fs::read_dir(&root)?
        .flatten()
        .any(|e| read_ready(&e.path()).is_some_and(|r| r.key == *key && claimable(&r, at)));
    if ready {
        return Ok(None);
    }
    let id = state::new_id();
    let dir = root.join(&id);
    state::create_private_dir(&dir)?;
    crate::gate::write_gate_files(&dir, &[])?;
    crate::gate::write_log_files(&dir)?;
    let gate = container::gate(&container::GateInputs {
        session_id: id.clone(),
        owner: key.owner.clone(),
        image: key.image.clone(),
        network: key.network.clone(),
        session_dir: dir.clone(),
        dns: key.dns.clone(),
        spare_for: Some(TTL.as_secs()),
    });
    let made = async {
        engine.create_container(&gate).await?;
        let output = EngineApi::output(engine, &gate.name).await?;
        engine.start_container(&gate.name).await?;
        crate::gate::wait_for_gate(output).await
    }
    .await;
    if let Err(e) = made {
        let _ = engine.remove_container(&gate.name).await;
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    let ready = Ready {
        key: key.clone(),
        made: now(),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
    tmp.write_all(serde_json::to_string(&ready)?.as_bytes())?;
    tmp.persist(dir.join(READY_FILE)).map_err(|e| e.error)?;
    Ok(Some(id))
}

/// Whether `name` is a session container's name, `sbx-<id>-agent` or `sbx-<id>-gate`.
pub fn is_session_container(name: &str) -> bool {
    name.strip_prefix("sbx-")
        .and_then(|r| r.strip_suffix("-agent").or_else(|| r.strip_suffix("-gate")))
        .is_some_and(state::valid_id)
}

/// Starts `sbx __spare KEY [CONTAINER...]` detached (a session of its own, no terminal), so it
/// outlives this process and Ctrl-C on the terminal does not reach it: it removes the finished
/// session's containers, then makes a spare.
pub fn spawn_helper(key: &Key, remove: &[String]) {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let Ok(json) = serde_json::to_string(key) else {
        return;
    };
    let mut args = vec!["__spare".to_owned(), json];
    args.extend(remove.iter().cloned());
    crate::process::spawn_detached(&exe, &args);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key {
            endpoint: "unix:///var/run/docker.sock".into(),
            image: "sbx-gate:fp-1".into(),
            network: container::SHARED_NETWORK.into(),
            dns: Vec::new(),
            owner: "0123456789ab".into(),
        }
    }

    fn spare(dirs: &Dirs, id: &str, key: &Key, made: u64) {
        let d = root(dirs).join(id);
        std::fs::create_dir_all(container::gate_dir(&d)).unwrap();
        let r = Ready {
            key: key.clone(),
            made,
        };
        std::fs::write(d.join(READY_FILE), serde_json::to_string(&r).unwrap()).unwrap();
    }

    #[test]
    fn a_session_claims_only_a_ready_fresh_spare_of_its_key_and_only_once() {
        let t = tempfile::tempdir().unwrap();
        let dirs = Dirs {
            config: t.path().join("config"),
            cache: t.path().join("cache"),
            data: t.path().join("data"),
            home: t.path().to_owned(),
        };
        assert_eq!(claim(&dirs, &key()), None);
        let other = Key {
            dns: vec!["10.0.0.53".parse().unwrap()],
            ..key()
        };
        spare(&dirs, "aaaa", &other, now());
        spare(&dirs, "bbbb", &key(), now() - TTL.as_secs() + 30);
        // Not ready yet: no `spare.json`.
        std::fs::create_dir_all(container::gate_dir(&root(&dirs).join("cccc"))).unwrap();
        assert_eq!(claim(&dirs, &key()), None);
        spare(&dirs, "dddd", &key(), now());
        assert_eq!(claim(&dirs, &key()).as_deref(), Some("dddd"));
        let s = dirs.session("dddd");
        assert!(container::gate_dir(&s).join("claimed").exists());
        assert!(!s.join(READY_FILE).exists());
        assert!(!root(&dirs).join("dddd").exists());
        assert_eq!(claim(&dirs, &key()), None);
        assert_eq!(claim(&dirs, &other).as_deref(), Some("aaaa"));
    }
}
