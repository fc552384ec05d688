//! `sbx allow ENTRY --session ID`: widen a running session's allowlist without restarting it.
//! The gate reloads the new plan: new sets and rules, and its DNS filter restarted.

use anyhow::Context as _;

use crate::allowlist::{self, Entry};
use crate::context::Context;
use crate::engine::Engine;
use crate::state;

pub async fn run(ctx: &Context, entries: &[String], id: &str) -> anyhow::Result<i32> {
    let new = allowlist::parse_all(entries.iter().map(String::as_str))?;
    let (dir, mut record) = super::log::find(ctx, id)?;
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
    Ok(0)
}
