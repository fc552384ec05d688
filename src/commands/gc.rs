//! `sbx gc`: finish the cleanup of sessions whose process died.

use crate::config::Layer;
use crate::engine::Engine;
use crate::session::{self, Context};

pub async fn run(ctx: &Context, docker_host: Option<String>) -> anyhow::Result<i32> {
    let settings = super::load_settings(ctx, super::project_root().as_deref(), Layer::default())?;
    let endpoint = super::endpoint(ctx, &settings, docker_host);
    let engine = match Engine::connect(&endpoint).await {
        Ok(e) => Some(e),
        Err(e) => {
            ctx.ui.warn(format!(
                "{e}; containers and networks are left alone this time"
            ));
            None
        }
    };
    let report = session::gc(ctx, engine.as_ref()).await?;
    session::report_outcomes(&ctx.ui, &report.outcomes);
    let n = |v: usize, what: &str| format!("{v} {what}{}", if v == 1 { "" } else { "s" });
    ctx.ui.info(format!(
        "removed {}, {}, {}; finished {}; cleared {}",
        n(report.containers_removed.len(), "container"),
        n(report.networks_removed.len(), "network"),
        n(report.vms_removed.len(), "VM"),
        n(report.sessions_finished.len(), "dead session"),
        n(report.folders_removed.len(), "old record"),
    ));
    Ok(if report.failed.is_empty() {
        0
    } else {
        crate::cli::EXIT_FAILURE
    })
}
