//! SSH to a VM or a remote Linux host with russh: public-key login, the host key pinned in
//! sbx's own known-hosts folder (one pin per instance: Lima instances get new host keys when
//! recreated), commands with their input on stdin, and the guest's Docker socket made local by
//! forwarding a Unix-socket channel per connection. Everything, tokens included, travels inside
//! this one connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use russh::client;
use russh::keys::PrivateKeyWithHashAlg;

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("cannot connect over SSH to `{addr}`")]
    Connect {
        addr: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot read the SSH key `{path}`")]
    Key {
        path: PathBuf,
        #[source]
        source: russh::keys::Error,
    },
    #[error("`{addr}` refused the SSH login of `{user}` with `{key}`")]
    Refused {
        addr: String,
        user: String,
        key: PathBuf,
    },
    #[error("the SSH host key of `{name}` changed since sbx first saw it")]
    HostKeyChanged { name: String },
    #[error("SSH to `{addr}` failed")]
    Protocol {
        addr: String,
        #[source]
        source: russh::Error,
    },
    #[error("cannot forward the Docker socket to `{path}`")]
    Forward {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl crate::error::Hint for SshError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            SshError::Connect { .. } => {
                "check that the VM or host is up and its SSH port answers".into()
            }
            SshError::Refused { .. } => {
                "check the user and that the key is in the guest's `authorized_keys`".into()
            }
            SshError::HostKeyChanged { .. } => {
                "if the machine was recreated, remove its pin from sbx's known-hosts folder and retry".into()
            }
            _ => return None,
        })
    }
}

/// Where to connect and as whom.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub key: PathBuf,
    /// The name the host key is pinned under.
    pub pin_name: String,
    /// The folder of pins.
    pub known_hosts: PathBuf,
}

struct Handler {
    pin: PathBuf,
    name: String,
    changed: Arc<std::sync::Mutex<bool>>,
}

impl client::Handler for Handler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            // sbx pins plain host keys; a certificate is not what a Lima guest offers.
            return Ok(false);
        };
        // Compare the key material only: `PublicKey ==` also compares the comment.
        let offered = key.to_openssh().unwrap_or_default();
        let offered_data = offered
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        match std::fs::read_to_string(&self.pin) {
            Ok(pinned) => {
                let pinned = pinned
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ");
                let ok = pinned == offered_data;
                if !ok {
                    if let Ok(mut c) = self.changed.lock() {
                        *c = true;
                    }
                    tracing::warn!("host key of {} changed", self.name);
                }
                Ok(ok)
            }
            // First sight (sbx just created this instance, on a local port): pin it.
            Err(_) => {
                if let Some(dir) = self.pin.parent() {
                    let _ = crate::state::create_private_dir(dir);
                }
                let _ = std::fs::write(&self.pin, format!("{offered_data}\n"));
                Ok(true)
            }
        }
    }
}

/// A logged-in SSH connection.
pub struct Session {
    handle: Arc<client::Handle<Handler>>,
    addr: String,
}

/// Removes an instance's host-key pin (when the instance is deleted).
pub fn forget(known_hosts: &Path, name: &str) {
    let _ = std::fs::remove_file(known_hosts.join(name));
}

impl Session {
    pub async fn connect(t: &Target) -> Result<Session, SshError> {
        let addr = format!("{}:{}", t.host, t.port);
        let key = russh::keys::load_secret_key(&t.key, None).map_err(|source| SshError::Key {
            path: t.key.clone(),
            source,
        })?;
        let config = Arc::new(client::Config {
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(15)),
            ..Default::default()
        });
        let changed = Arc::new(std::sync::Mutex::new(false));
        let handler = Handler {
            pin: t.known_hosts.join(&t.pin_name),
            name: t.pin_name.clone(),
            changed: changed.clone(),
        };
        let connect = client::connect(config, (t.host.as_str(), t.port), handler);
        let mut handle = match tokio::time::timeout(Duration::from_secs(20), connect).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                if changed.lock().map(|c| *c).unwrap_or(false) {
                    return Err(SshError::HostKeyChanged {
                        name: t.pin_name.clone(),
                    });
                }
                return Err(SshError::Connect {
                    addr,
                    source: Box::new(e),
                });
            }
            Err(_) => {
                return Err(SshError::Connect {
                    addr,
                    source: "no answer within 20 s".into(),
                });
            }
        };
        let hash = handle
            .best_supported_rsa_hash()
            .await
            .ok()
            .flatten()
            .flatten();
        let auth = handle
            .authenticate_publickey(
                t.user.clone(),
                PrivateKeyWithHashAlg::new(Arc::new(key), hash),
            )
            .await
            .map_err(|source| SshError::Protocol {
                addr: addr.clone(),
                source,
            })?;
        if !auth.success() {
            return Err(SshError::Refused {
                addr,
                user: t.user.clone(),
                key: t.key.clone(),
            });
        }
        Ok(Session {
            handle: Arc::new(handle),
            addr,
        })
    }

    /// Runs a shell command with `stdin` as its input; returns the exit code and output.
    /// Secrets go in `stdin`, never in `command`.
    pub async fn exec(&self, command: &str, stdin: &[u8]) -> Result<(u32, String), SshError> {
        let err = |source| SshError::Protocol {
            addr: self.addr.clone(),
            source,
        };
        let mut ch = self.handle.channel_open_session().await.map_err(err)?;
        ch.exec(true, command).await.map_err(err)?;
        if !stdin.is_empty() {
            ch.data(stdin).await.map_err(err)?;
        }
        ch.eof().await.map_err(err)?;
        let mut out = Vec::new();
        let mut code = None;
        while let Some(msg) = ch.wait().await {
            match msg {
                russh::ChannelMsg::Data { data } => out.extend_from_slice(&data),
                russh::ChannelMsg::ExtendedData { data, .. } => out.extend_from_slice(&data),
                russh::ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
                _ => {}
            }
        }
        Ok((
            code.unwrap_or(255),
            String::from_utf8_lossy(&out).into_owned(),
        ))
    }

    /// Serves `local` (a Unix socket path) by forwarding each connection to `remote` (a Unix
    /// socket on the far side). Runs until the returned task is aborted.
    pub fn forward_unix(
        &self,
        local: &Path,
        remote: &str,
    ) -> Result<tokio::task::JoinHandle<()>, SshError> {
        let _ = std::fs::remove_file(local);
        let listener =
            tokio::net::UnixListener::bind(local).map_err(|source| SshError::Forward {
                path: local.to_owned(),
                source,
            })?;
        let handle = self.handle.clone();
        let remote = remote.to_owned();
        Ok(tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let handle = handle.clone();
                let remote = remote.clone();
                tokio::spawn(async move {
                    let Ok(ch) = handle.channel_open_direct_streamlocal(remote).await else {
                        return;
                    };
                    let mut stream = ch.into_stream();
                    let _ = tokio::io::copy_bidirectional(&mut conn, &mut stream).await;
                });
            }
        }))
    }
}
