//! Tokens: secrets kept in the OS keychain (macOS Keychain; on Linux the Secret Service when a
//! D-Bus session offers one, else the kernel keyutils keyring) or, on explicit opt-in, a 0600 file.
//! Entries live under the service `sbx`, so sbx never reads or overwrites another program's items.
//! A small index of names and the environment variable each becomes (never values) lets `sbx token
//! list` work with stores that cannot enumerate.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyring_core::{CredentialStore, Entry};
use serde::{Deserialize, Serialize};

use crate::config::TokenStoreKind;

/// A secret value. `Debug` and `Display` print `***`, so it cannot leak through logs or errors.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The value itself, for the one place that needs it (the exec environment, stdout of
    /// `sbx token get`).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Names sbx knows, and the variable each becomes inside the sandbox.
pub const WELL_KNOWN: &[(&str, &str, &str)] = &[
    (
        "github",
        "GH_TOKEN",
        "a GitHub token for `gh` and `git push` over HTTPS",
    ),
    (
        "claude",
        "CLAUDE_CODE_OAUTH_TOKEN",
        "Claude Code's long-lived login (`claude setup-token` prints one)",
    ),
    ("anthropic", "ANTHROPIC_API_KEY", "an Anthropic API key"),
];

pub fn well_known_env(name: &str) -> Option<&'static str> {
    WELL_KNOWN
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, e, _)| *e)
}

#[derive(Debug, thiserror::Error)]
pub enum KeychainError {
    #[error(
        "`{name}` is not a valid token name (use letters, digits, `-`, `_` or `.`, at most 64)"
    )]
    BadName { name: String },
    #[error("`{var}` is not a valid environment variable name")]
    BadEnv { var: String },
    #[error("`{name}` is not a well-known token name{suggestion}")]
    UnknownName { name: String, suggestion: String },
    #[error("the token is empty")]
    Empty,
    #[error("the token has a line break in the middle; a token is one line")]
    Multiline,
    #[error("no token `{name}` is stored in the {store}")]
    Missing { name: String, store: String },
    #[error("the {store} is locked or refused access")]
    Locked {
        store: String,
        #[source]
        source: keyring_core::Error,
    },
    #[error("the {store} cannot be used here")]
    Unavailable {
        store: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the kernel keyring here cannot keep tokens between runs (no persistent keyring)")]
    NotPersistent,
    #[error("the {store} failed")]
    Store {
        store: String,
        #[source]
        source: keyring_core::Error,
    },
    #[error("cannot use the token file `{path}`")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl crate::error::Hint for KeychainError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            KeychainError::UnknownName { .. } => format!(
                "well-known names are {}; for another name add `--env VARIABLE`",
                WELL_KNOWN
                    .iter()
                    .map(|(n, _, _)| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            KeychainError::Missing { name, .. } => {
                format!("store it with `sbx token set {name}`")
            }
            KeychainError::Locked { .. } => {
                "unlock your keychain (on macOS over SSH: `security unlock-keychain`), then try again"
                    .into()
            }
            KeychainError::Unavailable { .. } | KeychainError::NotPersistent => {
                "on a headless machine, opt in to a private file with `token_store: file` in `~/.config/sbx/config.yaml`"
                    .into()
            }
            KeychainError::BadName { .. } => {
                "name tokens with letters, digits, `-`, `_` or `.`, such as `npm` or `gitlab-ci`".into()
            }
            KeychainError::BadEnv { .. } => {
                "use upper-case letters, digits and `_`, such as `NPM_TOKEN`".into()
            }
            KeychainError::Empty | KeychainError::Multiline => {
                "paste the token alone on one line (or pipe it: `printf %s \"$T\" | sbx token set NAME`)"
                    .into()
            }
            _ => return None,
        })
    }
}

/// Checks a token name is one every store accepts.
pub fn check_name(name: &str) -> Result<(), KeychainError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(KeychainError::BadName {
            name: name.to_owned(),
        })
    }
}

pub fn check_env_name(var: &str) -> Result<(), KeychainError> {
    let mut b = var.bytes();
    let ok = b
        .next()
        .is_some_and(|c| c.is_ascii_uppercase() || c == b'_')
        && b.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_');
    if ok {
        Ok(())
    } else {
        Err(KeychainError::BadEnv {
            var: var.to_owned(),
        })
    }
}

/// The variable a token becomes: `--env` when given, else the well-known one.
pub fn env_for(name: &str, env: Option<&str>) -> Result<String, KeychainError> {
    check_name(name)?;
    if let Some(v) = env {
        check_env_name(v)?;
        return Ok(v.to_owned());
    }
    well_known_env(name).map(str::to_owned).ok_or_else(|| {
        let suggestion = WELL_KNOWN
            .iter()
            .find(|(n, _, _)| edit_distance(n, name) <= 2)
            .map(|(n, _, _)| format!("; did you mean `{n}`?"))
            .unwrap_or_default();
        KeychainError::UnknownName {
            name: name.to_owned(),
            suggestion,
        }
    })
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Turns what a user typed or piped into a token: one line, trailing newline stripped.
pub fn parse_input(raw: &str) -> Result<Secret, KeychainError> {
    let v = raw
        .strip_suffix("\r\n")
        .or_else(|| raw.strip_suffix('\n'))
        .unwrap_or(raw);
    if v.contains('\n') || v.contains('\r') {
        return Err(KeychainError::Multiline);
    }
    if v.trim().is_empty() {
        return Err(KeychainError::Empty);
    }
    if v.contains('\0') {
        return Err(KeychainError::Multiline);
    }
    Ok(Secret(v.to_owned()))
}

/// One indexed token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IndexEntry {
    pub env: String,
    pub store: String,
}

enum Backend {
    Keyring(Arc<CredentialStore>),
    File(PathBuf),
}

/// An opened token store plus the index of names.
pub struct Tokens {
    backend: Backend,
    /// What to call the store in messages and listings.
    pub store_name: String,
    index_path: PathBuf,
    service: String,
}

impl Tokens {
    /// Opens the store the setting asks for. `config_dir` holds the index (and the file store).
    pub fn open(kind: TokenStoreKind, config_dir: &Path) -> Result<Tokens, KeychainError> {
        let (backend, store_name) = match kind {
            TokenStoreKind::File => (
                Backend::File(config_dir.join("tokens.secret")),
                format!(
                    "token file `{}`",
                    config_dir.join("tokens.secret").display()
                ),
            ),
            TokenStoreKind::Auto => {
                let (store, name) = platform_store()?;
                (Backend::Keyring(store), name)
            }
        };
        Ok(Tokens {
            backend,
            store_name,
            index_path: config_dir.join("tokens.json"),
            service: service_name(),
        })
    }

    /// A store over keyring-core's in-memory mock (unit tests).
    pub fn mock(config_dir: &Path) -> Result<Tokens, KeychainError> {
        let store: Arc<CredentialStore> =
            keyring_core::mock::Store::new().map_err(|source| KeychainError::Store {
                store: "mock store".into(),
                source,
            })?;
        Ok(Tokens {
            backend: Backend::Keyring(store),
            store_name: "mock store".into(),
            index_path: config_dir.join("tokens.json"),
            service: service_name(),
        })
    }

    fn entry(&self, store: &Arc<CredentialStore>, name: &str) -> Result<Entry, KeychainError> {
        Entry::new_in_store(store, &self.service, name).map_err(|e| self.classify(e, name))
    }

    fn classify(&self, e: keyring_core::Error, name: &str) -> KeychainError {
        let store = self.store_name.clone();
        match e {
            keyring_core::Error::NoEntry => KeychainError::Missing {
                name: name.to_owned(),
                store,
            },
            keyring_core::Error::NoStorageAccess(_) => KeychainError::Locked { store, source: e },
            keyring_core::Error::Invalid(..) | keyring_core::Error::TooLong(..) => {
                KeychainError::BadName {
                    name: name.to_owned(),
                }
            }
            source => KeychainError::Store { store, source },
        }
    }

    pub fn set(&self, name: &str, env: &str, secret: &Secret) -> Result<(), KeychainError> {
        check_name(name)?;
        check_env_name(env)?;
        match &self.backend {
            Backend::Keyring(store) => {
                self.entry(store, name)?
                    .set_password(secret.expose())
                    .map_err(|e| self.classify(e, name))?;
            }
            Backend::File(path) => {
                let mut all = read_secret_file(path)?;
                all.insert(name.to_owned(), secret.expose().to_owned());
                write_private(path, &serde_json::to_vec_pretty(&all).unwrap_or_default())?;
            }
        }
        let mut index = self.index()?;
        index.insert(
            name.to_owned(),
            IndexEntry {
                env: env.to_owned(),
                store: self.store_name.clone(),
            },
        );
        self.write_index(&index)
    }

    pub fn get(&self, name: &str) -> Result<Secret, KeychainError> {
        check_name(name)?;
        match &self.backend {
            Backend::Keyring(store) => self
                .entry(store, name)?
                .get_password()
                .map(Secret)
                .map_err(|e| self.classify(e, name)),
            Backend::File(path) => {
                read_secret_file(path)?
                    .remove(name)
                    .map(Secret)
                    .ok_or_else(|| KeychainError::Missing {
                        name: name.to_owned(),
                        store: self.store_name.clone(),
                    })
            }
        }
    }

    pub fn remove(&self, name: &str) -> Result<(), KeychainError> {
        check_name(name)?;
        let result = match &self.backend {
            Backend::Keyring(store) => self
                .entry(store, name)?
                .delete_credential()
                .map_err(|e| self.classify(e, name)),
            Backend::File(path) => {
                let mut all = read_secret_file(path)?;
                match all.remove(name) {
                    Some(_) => {
                        write_private(path, &serde_json::to_vec_pretty(&all).unwrap_or_default())
                    }
                    None => Err(KeychainError::Missing {
                        name: name.to_owned(),
                        store: self.store_name.clone(),
                    }),
                }
            }
        };
        let mut index = self.index()?;
        let was_indexed = index.remove(name).is_some();
        self.write_index(&index)?;
        match result {
            Err(KeychainError::Missing { .. }) if was_indexed => Ok(()),
            r => r,
        }
    }

    /// Names and variables (never values).
    pub fn index(&self) -> Result<BTreeMap<String, IndexEntry>, KeychainError> {
        match std::fs::read_to_string(&self.index_path) {
            Ok(t) => Ok(serde_json::from_str(&t).unwrap_or_default()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(source) => Err(KeychainError::File {
                path: self.index_path.clone(),
                source,
            }),
        }
    }

    fn write_index(&self, index: &BTreeMap<String, IndexEntry>) -> Result<(), KeychainError> {
        write_private(
            &self.index_path,
            &serde_json::to_vec_pretty(index).unwrap_or_default(),
        )
    }
}

/// `sbx`, or `sbx-<suffix>` when `SBX_KEYRING_NAMESPACE` is set (the tests use it so that
/// parallel tests never share entries).
fn service_name() -> String {
    match crate::env::var(crate::env::SBX_KEYRING_NAMESPACE) {
        Some(ns) if !ns.is_empty() => format!("sbx-{ns}"),
        _ => "sbx".into(),
    }
}

fn read_secret_file(path: &Path) -> Result<BTreeMap<String, String>, KeychainError> {
    match std::fs::read_to_string(path) {
        Ok(t) => serde_json::from_str(&t).map_err(|e| KeychainError::File {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(source) => Err(KeychainError::File {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes a file only the user can read, atomically.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeychainError> {
    let err = |source| KeychainError::File {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::state::create_private_dir(dir).map_err(err)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(target_os = "macos")]
fn platform_store() -> Result<(Arc<CredentialStore>, String), KeychainError> {
    let store: Arc<CredentialStore> =
        apple_native_keyring_store::keychain::Store::new().map_err(|e| {
            KeychainError::Unavailable {
                store: "macOS Keychain".into(),
                source: Box::new(e),
            }
        })?;
    Ok((store, "macOS Keychain".into()))
}

#[cfg(target_os = "linux")]
fn platform_store() -> Result<(Arc<CredentialStore>, String), KeychainError> {
    // The Secret Service when a D-Bus session offers one (it persists across reboots).
    let dbus = crate::env::var_os(crate::env::DBUS_SESSION_BUS_ADDRESS).is_some()
        && crate::env::var_os(crate::env::SBX_NO_SECRET_SERVICE).is_none();
    if let Some(store) = dbus
        .then(zbus_secret_service_keyring_store::Store::new)
        .and_then(Result::ok)
    {
        let store: Arc<CredentialStore> = store;
        return Ok((store, "Secret Service".into()));
    }
    keyutils::ensure_session_keyring().map_err(|e| KeychainError::Unavailable {
        store: "kernel keyring".into(),
        source: Box::new(e),
    })?;
    keyutils::ensure_persistent()?;
    let store: Arc<CredentialStore> =
        linux_keyutils_keyring_store::Store::new().map_err(|e| KeychainError::Unavailable {
            store: "kernel keyring".into(),
            source: Box::new(e),
        })?;
    Ok((store, "kernel keyring (keyutils)".into()))
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn platform_store() -> Result<(Arc<CredentialStore>, String), KeychainError> {
    Err(KeychainError::Unavailable {
        store: "keychain".into(),
        source: "no keychain is supported on this platform".into(),
    })
}

#[cfg(target_os = "linux")]
mod keyutils {
    use super::KeychainError;

    const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
    const KEY_SPEC_USER_SESSION_KEYRING: libc::c_long = -5;

    fn keyctl(op: libc::c_long, a: libc::c_long, b: libc::c_long) -> std::io::Result<libc::c_long> {
        // SAFETY: keyctl with integer arguments (and a null name for JOIN); no memory is passed.
        let r = unsafe { libc::syscall(libc::SYS_keyctl, op, a, b) };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    /// A process started without a session keyring (CI, `docker exec`, cron) falls back to the
    /// user-session keyring, where linking to the persistent keyring is refused. Joining a fresh
    /// anonymous session keyring (what `keyctl session -` does) fixes that for this process.
    pub fn ensure_session_keyring() -> std::io::Result<()> {
        let session = keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0)?;
        let user_session = keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_SESSION_KEYRING, 0)?;
        if session == user_session {
            keyctl(KEYCTL_JOIN_SESSION_KEYRING, 0, 0)?;
        }
        Ok(())
    }

    /// Tokens must outlive the process: they live in the per-user persistent keyring.
    pub fn ensure_persistent() -> Result<(), KeychainError> {
        linux_keyutils::KeyRing::get_persistent(linux_keyutils::KeyRingIdentifier::Session)
            .map(|_| ())
            .map_err(|_| KeychainError::NotPersistent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Hint;

    #[test]
    fn names_and_variables() {
        assert_eq!(env_for("github", None).unwrap(), "GH_TOKEN");
        assert_eq!(env_for("claude", None).unwrap(), "CLAUDE_CODE_OAUTH_TOKEN");
        assert_eq!(env_for("anthropic", None).unwrap(), "ANTHROPIC_API_KEY");
        assert_eq!(env_for("npm", Some("NPM_TOKEN")).unwrap(), "NPM_TOKEN");
        let e = env_for("gihub", None).unwrap_err();
        assert!(e.to_string().contains("did you mean `github`"), "{e}");
        assert!(e.hint().unwrap().contains("--env"));
        assert!(matches!(
            env_for("a b", None),
            Err(KeychainError::BadName { .. })
        ));
        assert!(matches!(
            env_for("x", Some("lower")),
            Err(KeychainError::BadEnv { .. })
        ));
        assert!(check_name(&"x".repeat(65)).is_err());
    }

    #[test]
    fn input_is_one_line() {
        assert_eq!(parse_input("abc\n").unwrap().expose(), "abc");
        assert_eq!(parse_input("abc\r\n").unwrap().expose(), "abc");
        assert_eq!(parse_input("abc").unwrap().expose(), "abc");
        assert!(matches!(parse_input("\n"), Err(KeychainError::Empty)));
        assert!(matches!(parse_input(""), Err(KeychainError::Empty)));
        assert!(matches!(
            parse_input("a\nb\n"),
            Err(KeychainError::Multiline)
        ));
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s} {s:?}"), "*** ***");
    }

    #[test]
    fn mock_store_round_trip_and_index_without_values() {
        let d = tempfile::tempdir().unwrap();
        let t = Tokens::mock(d.path()).unwrap();
        let s = Secret::new("v4lue".into());
        t.set("github", "GH_TOKEN", &s).unwrap();
        assert_eq!(t.get("github").unwrap(), s);
        let index = std::fs::read_to_string(d.path().join("tokens.json")).unwrap();
        assert!(index.contains("GH_TOKEN") && !index.contains("v4lue"));
        t.remove("github").unwrap();
        assert!(matches!(
            t.get("github"),
            Err(KeychainError::Missing { .. })
        ));
        assert!(t.index().unwrap().is_empty());
    }

    #[test]
    fn file_store_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let t = Tokens::open(TokenStoreKind::File, d.path()).unwrap();
        t.set("npm", "NPM_TOKEN", &Secret::new("s3cret".into()))
            .unwrap();
        let meta = std::fs::metadata(d.path().join("tokens.secret")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(t.get("npm").unwrap().expose(), "s3cret");
        assert!(t.store_name.contains("token file"));
        t.remove("npm").unwrap();
        assert!(t.get("npm").is_err());
    }
}
