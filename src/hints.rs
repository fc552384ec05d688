//! Finding the hints in an error chain: the one list of sbx's error types that have hints (an
//! error in a chain is seen only as `dyn Error`, so a type is found by downcasting). It sits
//! above every module whose errors it lists; they only implement `error::Hint`.

use std::error::Error;

use crate::allowlist::EntryError;
use crate::config::ConfigError;
use crate::engine::EngineError;
use crate::image::ImageError;
use crate::keychain::KeychainError;
use crate::ssh::SshError;
use crate::trust::TrustError;
use crate::vm::VmError;
use crate::worktree::GitError;

use crate::error::{Hint, Hinted, Report};

/// The hint of one error of a chain: `Some(hint)` when `e` is a `T`.
fn hint_of<T: Hint + Error + 'static>(e: &(dyn Error + 'static)) -> Option<Option<String>> {
    e.downcast_ref::<T>().map(Hint::hint)
}

type HintOf = fn(&(dyn Error + 'static)) -> Option<Option<String>>;

/// Every error type that has hints. An error in a chain is seen only as `dyn Error`, so a type
/// is found by downcasting: a new type with hints is added here.
const HINTED_TYPES: &[HintOf] = &[
    hint_of::<Hinted>,
    hint_of::<GitError>,
    hint_of::<EngineError>,
    hint_of::<TrustError>,
    hint_of::<ConfigError>,
    hint_of::<EntryError>,
    hint_of::<KeychainError>,
    hint_of::<VmError>,
    hint_of::<SshError>,
    hint_of::<ImageError>,
];

/// The hint for one error of a chain, when its type has one.
pub fn hint_for(e: &(dyn Error + 'static)) -> Option<String> {
    HINTED_TYPES.iter().find_map(|of| of(e)).flatten()
}

/// Every distinct hint of an error and its causes, outermost first.
pub fn hints(e: &(dyn Error + 'static)) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(h) = hint_for(e).filter(|h| !out.contains(h)) {
            out.push(h);
        }
        next = e.source();
    }
    out
}

/// The report of an error: its message, its causes (a cause repeated by the next layer shown
/// once) and every distinct hint of the chain.
pub fn report(e: &anyhow::Error) -> Report {
    let mut causes: Vec<String> = e.chain().skip(1).map(ToString::to_string).collect();
    causes.dedup();
    Report {
        message: e.to_string(),
        causes,
        hints: hints(e.as_ref()),
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;

    use super::*;
    use crate::error::hinted;

    /// An engine behind SSH that does not answer: both layers say what to do.
    fn two_hinted_layers() -> anyhow::Error {
        let ssh = SshError::Connect {
            addr: "10.0.0.2:22".into(),
            source: Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        };
        let engine = EngineError::Unavailable {
            endpoint: "ssh://vm".into(),
            source: Box::new(ssh),
        };
        Err::<(), _>(engine)
            .context("cannot start the session")
            .unwrap_err()
    }

    #[test]
    fn a_report_shows_every_hint_of_the_chain_outermost_first() {
        let e = two_hinted_layers();
        let r = report(&e);
        assert_eq!(r.message, "cannot start the session");
        assert_eq!(
            r.causes,
            [
                "no container engine answers at `ssh://vm`",
                "cannot connect over SSH to `10.0.0.2:22`",
                "connection refused",
            ]
        );
        assert_eq!(r.hints.len(), 2, "{:?}", r.hints);
        assert!(r.hints[0].starts_with("start Docker"), "{:?}", r.hints);
        assert!(r.hints[1].contains("SSH port answers"), "{:?}", r.hints);
    }

    #[test]
    fn a_hint_repeated_down_the_chain_is_shown_once() {
        let inner = EngineError::Unavailable {
            endpoint: "unix:///a".into(),
            source: Box::new(std::io::Error::from(std::io::ErrorKind::NotFound)),
        };
        let outer = EngineError::Unavailable {
            endpoint: "unix:///b".into(),
            source: Box::new(inner),
        };
        let r = report(&anyhow::Error::from(outer));
        assert_eq!(r.hints.len(), 1, "{:?}", r.hints);
    }

    #[test]
    fn ad_hoc_errors_and_typed_ones_have_hints() {
        let e = hinted("no session is running", "start one with `sbx run`");
        assert_eq!(report(&e).hints, ["start one with `sbx run`"]);
        let e = anyhow::Error::from(ConfigError::Env {
            var: "SBX_X".into(),
            message: "bad".into(),
        });
        assert_eq!(report(&e).hints, ["fix or unset `SBX_X`"]);
        let plain = anyhow::anyhow!("nothing to say");
        assert!(report(&plain).hints.is_empty());
    }
}
