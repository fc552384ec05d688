//! `sbx gc`: finish the cleanup of sessions whose process died.

use crate::cli::GcArgs;
use crate::config::Layer;
use crate::context::Context;
use crate::engine::Engine;
use crate::session;

pub async fn run(ctx: &Context, args: GcArgs, docker_host: Option<String>) -> anyhow::Result<i32> {
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
    // Gates started ahead for the next session go first, so they are not counted as a dead
    // session's containers: the next session makes one again.
    let spares = match &engine {
        Some(engine) => crate::spare::remove(&ctx.dirs, engine, true).await?,
        None => 0,
    };
    let report = session::gc(ctx, engine.as_ref()).await?;
    session::report_outcomes(&ctx.ui, &report.outcomes);
    let mut images = Vec::new();
    if let Some(engine) = &engine {
        // Never without the current settings' tags: they are what must stay.
        match crate::image::specs(&settings) {
            Ok(specs) => {
                let current: Vec<&str> = specs.iter().map(|s| s.tag.as_str()).collect();
                images = crate::imagegc::prune(engine, &current, args.images, &ctx.ui).await?;
            }
            Err(e) => ctx.ui.warn(format!(
                "{:#}; images are left alone this time",
                anyhow::Error::new(e)
            )),
        }
    }
    let n = |v: usize, what: &str| format!("{v} {what}{}", if v == 1 { "" } else { "s" });
    ctx.ui.info(format!(
        "removed {}, {}, {}, {}, {}; finished {}; cleared {}",
        n(report.containers_removed.len(), "container"),
        n(spares, "spare gate"),
        n(report.networks_removed.len(), "network"),
        n(report.vms_removed.len(), "VM"),
        n(images.len(), "image name"),
        n(report.sessions_finished.len(), "dead session"),
        n(report.folders_removed.len(), "old record"),
    ));
    Ok(if report.failed.is_empty() {
        0
    } else {
        crate::cli::EXIT_FAILURE
    })
}
