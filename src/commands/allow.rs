//! `sbx allow ENTRY --session ID`: widen a running session's allowlist without restarting it.
//! The gate reloads the new plan: new sets and rules, and its DNS filter restarted.

use anyhow::Context as _;
use clap::Args;

use crate::allowlist::{self, Entry};
use crate::context::Context;
use crate::engine::Engine;
use crate::exit::ExitStatus;
use crate::state;

#[derive(Debug, Args)]
pub struct AllowArgs {
    /// Host name, `*.domain`, IP or CIDR, with optional `:PORT`.
    #[arg(required = true, value_name = "ENTRY")]
    pub entries: Vec<String>,
    /// The running session (id or unique prefix).
    #[arg(long, value_name = "ID")]
    pub session: String,
}

pub async fn run(ctx: &Context, args: AllowArgs) -> anyhow::Result<ExitStatus> {
    let new = allowlist::parse_all(args.entries.iter().map(String::as_str))?;
    let (dir, mut record) = super::log::find(ctx, &args.session)?;
    if !state::is_live(&dir) || record.phase != state::Phase::Running {
        return Err(crate::error::hinted(
            format!("session `{}` is not running", record.id),
            "`sbx ls` lists the running sessions",
        ));
    }
    for e in &new {
        let text = e.to_string();
        if !record.allow.contains(&text) {
            record.allow.push(text);
        }
    }
    let all: Vec<Entry> = allowlist::parse_all(record.allow.iter().map(String::as_str))?;
    crate::gate::write_gate_files(&dir, &all)?;
    let engine = Engine::connect(&record.endpoint).await?;
    let gate = crate::container::gate_name(&record.id);
    crate::gate::reload(&engine, &gate)
        .await
        .context("the session's gate could not load the new allowlist")?;
    record.save(&dir)?;
    let list: Vec<String> = new.iter().map(ToString::to_string).collect();
    ctx.ui.info(format!(
        "allowed {} in session `{}` until it ends; to keep it, add it under `allow:` in `.sbx.yaml` and approve that with `sbx trust`",
        list.join(", "),
        record.id
    ));
    Ok(ExitStatus::Success)
}
