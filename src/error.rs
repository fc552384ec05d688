//! sbx's errors as the user sees them: an error may carry a hint (what to do about it), and the
//! report shows the message, its causes and the most specific hint any layer offers.

use crate::config::ConfigError;
use crate::engine::EngineError;
use crate::image::ImageError;
use crate::trust::TrustError;
use crate::worktree::GitError;

/// An error that knows what the user should do about it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Hinted {
    pub message: String,
    pub hint: String,
}

pub fn hinted(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    Hinted {
        message: message.into(),
        hint: hint.into(),
    }
    .into()
}

/// The hint for one error of a chain, when its type has one.
pub fn hint_for(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    if let Some(h) = e.downcast_ref::<Hinted>() {
        return Some(h.hint.clone());
    }
    if let Some(g) = e.downcast_ref::<GitError>() {
        return g.hint();
    }
    if let Some(x) = e.downcast_ref::<EngineError>() {
        return x.hint();
    }
    if let Some(t) = e.downcast_ref::<TrustError>() {
        return t.hint();
    }
    if let Some(c) = e.downcast_ref::<ConfigError>() {
        return Some(match c {
            ConfigError::Env { var, .. } => format!("fix or unset `{var}`"),
            ConfigError::Parse { path, .. } | ConfigError::Read { path, .. } => format!(
                "fix `{}` (`sbx config show` lists every valid key)",
                path.display()
            ),
            ConfigError::NotAFile { path } => {
                format!(
                    "replace `{}` with a YAML file, or remove it",
                    path.display()
                )
            }
            ConfigError::Value { .. } => {
                "`sbx config show` lists every setting and its source".into()
            }
        });
    }
    if e.downcast_ref::<crate::allowlist::EntryError>().is_some() {
        return Some(
            "write a host name (`example.com`), a wildcard (`*.example.com`), an IP or a CIDR, optionally with `:PORT`"
                .into(),
        );
    }
    if let Some(k) = e.downcast_ref::<crate::keychain::KeychainError>() {
        return k.hint();
    }
    if let Some(v) = e.downcast_ref::<crate::vm::VmError>() {
        return v.hint();
    }
    if let Some(s) = e.downcast_ref::<crate::ssh::SshError>() {
        return s.hint();
    }
    if let Some(i) = e.downcast_ref::<ImageError>() {
        return Some(match i {
            ImageError::CaRead { .. } | ImageError::CaEmpty { .. } => {
                "point `image.extra_ca_certs` at PEM files".into()
            }
            _ => "point `image.dockerfile` at a folder with a Dockerfile".into(),
        });
    }
    None
}
