//! `sbx __spare KEY [CONTAINER...]` (hidden): makes a spare gate for the next session (see
//! `spare`). Runs detached, so nothing it prints is seen; its exit code is all it reports.

use clap::Args;

use crate::context::Context;
use crate::exit::ExitStatus;

#[derive(Debug, Args)]
pub struct SpareArgs {
    /// The spare's key, as JSON.
    pub key: String,
    /// A finished session's containers, removed first.
    pub remove: Vec<String>,
}

pub async fn run(ctx: &Context, args: SpareArgs) -> anyhow::Result<ExitStatus> {
    let key: crate::spare::Key = serde_json::from_str(&args.key)?;
    let engine = crate::engine::Engine::connect(&key.endpoint).await?;
    // Only sbx's session containers (`sbx-<id>-agent|gate`): the arguments are sbx's own, and
    // even so this never removes anything else.
    for name in args
        .remove
        .iter()
        .filter(|n| crate::spare::is_session_container(n))
    {
        engine.remove_container(name).await?;
    }
    crate::spare::make(&ctx.dirs, &engine, &key).await?;
    Ok(ExitStatus::Success)
}
