//! `sbx gc`: finish the cleanup of sessions whose process died.

use clap::Args;

use crate::config::Layer;
use crate::context::Context;
use crate::engine::Engine;
use crate::exit::ExitStatus;
use crate::session;

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Also remove the images sbx built that no container uses and the current settings do not
    /// need, however recently they were used (by default those are kept for 14 days: another
    /// project or user of the engine may need them). Sessions rebuild what they need.
    #[arg(long)]
    pub images: bool,
}

pub async fn run(
    ctx: &Context,
    args: GcArgs,
    docker_host: Option<String>,
) -> anyhow::Result<ExitStatus> {
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
    // Some sessions could not be cleaned up (their reasons were reported): sbx's own failure.
    Ok(if report.failed.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}
