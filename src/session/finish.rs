//! Finishing a session, one path for both `sbx run`'s teardown and `sbx gc`: its checkouts
//! (commits imported as `sbx/<id>`, dirty ones kept), its Claude configuration copy (the login
//! brought home, the copy deleted) and its record, marked finished.

use std::path::Path;

use crate::context::Context;
use crate::state::{self, Phase, Record};
use crate::worktree::{self, Checkout, Outcome};

/// Finishes the checkouts (in a blocking thread: git and the file system).
pub async fn checkouts(
    checkouts: Vec<Checkout>,
    id: &str,
    keep: bool,
) -> Result<Vec<Outcome>, tokio::task::JoinError> {
    let id = id.to_owned();
    tokio::task::spawn_blocking(move || {
        checkouts
            .iter()
            .map(|c| worktree::finish(c, &id, keep))
            .collect::<Vec<_>>()
    })
    .await
}

/// Marks the record finished with these outcomes, after the Claude configuration copy is done
/// with; the empty `repos` folder goes.
pub fn record(
    ctx: &Context,
    dir: &Path,
    record: &mut Record,
    outcomes: Vec<Outcome>,
) -> anyhow::Result<()> {
    claude(ctx, dir, record);
    record.outcomes = outcomes;
    record.phase = Phase::Finished;
    record.ended = Some(state::now());
    let saved = record.save(dir);
    let _ = std::fs::remove_dir(dir.join("repos"));
    saved.map_err(Into::into)
}

/// Brings the session's Claude login state home and deletes its copy of the configuration.
fn claude(ctx: &Context, dir: &Path, record: &Record) {
    let Some(start) = &record.claude_login else {
        // A copy whose making was interrupted brings nothing back, but may hold credentials.
        if let Err(e) = crate::claude::discard(dir) {
            ctx.ui.warn(format!(
                "could not delete the session's Claude configuration copy in `{}`: {e}",
                crate::claude::session_copy(dir).display()
            ));
        }
        return;
    };
    let host = crate::claude::HostConfig::from_env(&ctx.dirs.home);
    match crate::claude::bring_back(&host, dir, start) {
        Ok(done) if done.credentials => ctx.ui.info(
            "kept the Claude sign-in the session made or refreshed (credentials and account only)",
        ),
        // A first start writes its user id and onboarding flag: kept, nothing to say.
        Ok(_) => {}
        Err(e) => ctx.ui.warn(format!(
            "could not finish the session's Claude configuration copy in `{}`: {e}",
            crate::claude::session_copy(dir).display()
        )),
    }
}
