//! Session records on disk: `<cache>/sbx/sessions/<id>/session.json` (what a session made, so
//! `sbx ls`, `sbx gc` and `sbx log` can find it after a crash) and the lock a live session holds
//! (an `flock`, released by the kernel even on `kill -9`).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::worktree::{Checkout, Outcome};

const RECORD: &str = "session.json";
const LOCK: &str = "lock";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Being set up or running.
    Running,
    /// Ended and cleaned up.
    Finished,
}

/// What a session made and what became of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    pub pid: u32,
    pub phase: Phase,
    pub command: Vec<String>,
    /// The engine endpoint the containers live on.
    pub endpoint: String,
    /// Networks sbx created for the session (removed at the end).
    pub networks: Vec<String>,
    pub containers: Vec<String>,
    /// The VM instance, in VM mode.
    #[serde(default)]
    pub vm: Option<String>,
    #[serde(default)]
    pub vm_provider: Option<String>,
    pub checkouts: Vec<Checkout>,
    #[serde(default)]
    pub outcomes: Vec<Outcome>,
    /// The effective allowlist (what `sbx allow` extends).
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The address the start-up self-check probed (its refusals are not the command's).
    #[serde(default)]
    pub probe: Option<String>,
    /// The fingerprint of the Claude login state the session's copy started with
    /// (`claude::Prepared`), when it had one.
    #[serde(default)]
    pub claude_login: Option<String>,
    #[serde(default)]
    pub ended: Option<u64>,
    /// How the command was run, for `sbx exec` into the same container: its user, working
    /// folder, whether it had a Claude configuration, and where each token came from (never a
    /// token itself).
    #[serde(default)]
    pub exec: Option<ExecContext>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecContext {
    /// `uid:gid`
    pub user: String,
    pub working_dir: String,
    /// Whether the command got a Claude configuration copy (`CLAUDE_CONFIG_DIR`).
    pub claude: bool,
    pub tokens: Vec<TokenSource>,
}

/// Where a forwarded token came from, so `sbx exec` can fetch it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSource {
    /// The variable the command sees.
    pub env: String,
    /// A stored token's name (`sbx token`), or `None` for the variable of sbx's own environment.
    pub stored: Option<String>,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A short random session id: 8 lowercase hex characters, from the OS's randomness.
pub fn new_id() -> String {
    let mut buf = [0u8; 4];
    let filled = File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .is_ok();
    if !filled {
        let n = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
            ^ std::process::id().rotate_left(16);
        buf = n.to_le_bytes();
    }
    hex::encode(buf)
}

/// Whether a string is a session id sbx could have made (guards paths built from user input).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Creates folders private to the user.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

impl Record {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(RECORD)
    }

    /// Reads the record. The session folder is shared with the session (and, in VM mode, with
    /// a VM that may be the agent's): the file is opened without following a symlink and
    /// without blocking on a FIFO, and must be a regular file of sane size.
    pub fn load(dir: &Path) -> std::io::Result<Record> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        const MAX: u64 = 4 << 20;
        let invalid = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(Self::path(dir))?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(invalid("the session record is not a regular file"));
        }
        if meta.len() > MAX {
            return Err(invalid("the session record is too large"));
        }
        let mut text = String::new();
        file.take(MAX).read_to_string(&mut text)?;
        serde_json::from_str(&text)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// Writes atomically (temp file, then rename), so a crash never leaves half a record.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        tmp.as_file().sync_all()?;
        tmp.persist(Self::path(dir)).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Held by a live session for its whole life.
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Takes the session's lock, failing if another process holds it.
    pub fn acquire(dir: &Path) -> std::io::Result<Option<Lock>> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join(LOCK))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(Lock { _file: file })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether a session's owner is still alive (it holds the lock).
pub fn is_live(dir: &Path) -> bool {
    match Lock::acquire(dir) {
        Ok(Some(_lock)) => false,
        Ok(None) => true,
        // Cannot tell: treat as live, so nothing of it is removed.
        Err(_) => dir.join(LOCK).exists(),
    }
}

/// Every session folder with a readable record, newest first.
pub fn list(sessions: &Path) -> Vec<(PathBuf, Record)> {
    let Ok(rd) = std::fs::read_dir(sessions) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, Record)> = rd
        .flatten()
        .map(|e| e.path())
        .filter_map(|p| Record::load(&p).ok().map(|r| (p, r)))
        .collect();
    out.sort_by(|a, b| b.1.created.cmp(&a.1.created).then(a.1.id.cmp(&b.1.id)));
    out
}

/// Human age: `42s`, `5m`, `3h`, `2d`.
pub fn age(since: u64) -> String {
    let s = now().saturating_sub(since);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_record_that_is_a_link_or_a_fifo_is_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("elsewhere.json");
        std::fs::write(&target, "{}").unwrap();
        std::os::unix::fs::symlink(&target, super::Record::path(d.path())).unwrap();
        assert!(super::Record::load(d.path()).is_err());
        std::fs::remove_file(super::Record::path(d.path())).unwrap();
        let fifo =
            std::ffi::CString::new(super::Record::path(d.path()).to_str().unwrap().to_owned())
                .unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(super::Record::load(d.path()).is_err());
    }

    use super::*;

    #[test]
    fn ids_are_short_hex_and_valid() {
        let a = new_id();
        assert_eq!(a.len(), 8);
        assert!(valid_id(&a));
        assert_ne!(a, new_id());
        assert!(!valid_id("../x"));
    }

    #[test]
    fn record_round_trip_and_lock() {
        let d = tempfile::tempdir().unwrap();
        let r = Record {
            id: "abc".into(),
            created: now(),
            pid: 1,
            phase: Phase::Running,
            command: vec!["true".into()],
            endpoint: "unix:///x".into(),
            networks: vec![],
            containers: vec!["c".into()],
            vm: None,
            vm_provider: None,
            checkouts: vec![],
            outcomes: vec![],
            allow: vec![],
            exit_code: None,
            probe: None,
            claude_login: None,
            ended: None,
            exec: None,
        };
        r.save(d.path()).unwrap();
        assert_eq!(Record::load(d.path()).unwrap().containers, ["c"]);
        assert!(!is_live(d.path()));
        let l = Lock::acquire(d.path()).unwrap().unwrap();
        // flock is per open file description: a second open in this process sees it held.
        assert!(is_live(d.path()));
        drop(l);
        assert!(!is_live(d.path()));
        assert_eq!(
            list(d.path().parent().unwrap())
                .iter()
                .filter(|(p, _)| p == d.path())
                .count(),
            1
        );
    }
}
