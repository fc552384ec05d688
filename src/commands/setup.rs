//! `sbx setup [--vm]`: check the engine and bring the images up to date (a quick no-op when
//! nothing changed: only fingerprints are compared); with `--vm`, prepare the golden VM that
//! session VMs are cloned from, with a bar per phase.

use clap::Args;

use crate::config::{Layer, Settings, VmProvider};
use crate::context::Context;
use crate::engine::Engine;
use crate::exit::ExitStatus;

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Prepare the golden VM for `sbx run --vm` (a fast no-op when it is up to date).
    #[arg(long)]
    pub vm: bool,
    /// Rebuild the sandbox image with the newest Claude Code (its self-updater is off inside).
    #[arg(long)]
    pub update: bool,
}

pub async fn run(
    ctx: &Context,
    args: SetupArgs,
    docker_host: Option<String>,
) -> anyhow::Result<ExitStatus> {
    let mut settings =
        super::load_settings(ctx, super::project_root().as_deref(), Layer::default())?;
    if args.update {
        settings.image.claude_code_refresh = Some(new_refresh(ctx)?);
    }
    if args.vm {
        return golden(ctx, &settings).await;
    }
    let specs = crate::image::specs(&settings)?;
    let engine = Engine::connect(&super::endpoint(ctx, &settings, docker_host)).await?;
    let built = crate::imagebuild::ensure(&ctx.ui, &engine, &specs).await?;
    if !built {
        ctx.ui.info("images are up to date");
    }
    if args.update {
        let tag = crate::image::tag_of(&specs, "sandbox");
        let version = crate::claude::image_version(&engine, tag, &ctx.dirs.owner_tag()).await;
        ctx.ui.info(match version {
            Some(v) => format!("Claude Code {v} in `{}`", settings.image.tag),
            None => format!(
                "`{}` has no `claude` that answers `claude --version` (a custom image?)",
                settings.image.tag
            ),
        });
    }
    Ok(ExitStatus::Success)
}

/// A new stamp for the image's Claude Code layer, kept for later builds.
fn new_refresh(ctx: &Context) -> anyhow::Result<String> {
    let stamp = format!(
        "{}{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
        crate::state::new_id()
    );
    crate::state::create_private_dir(&ctx.dirs.cache)?;
    let path = super::refresh_file(ctx);
    std::fs::write(&path, format!("{stamp}\n"))
        .map_err(|e| anyhow::anyhow!("cannot write `{}`: {e}", path.display()))?;
    Ok(stamp)
}

/// Prepares (or confirms) the golden VM (`placement::golden`); Colima has none.
async fn golden(ctx: &Context, settings: &Settings) -> anyhow::Result<ExitStatus> {
    if settings.vm.provider == VmProvider::Colima {
        ctx.ui.info(
            "Colima boots a fresh profile for every session (no golden VM to prepare; slower than Lima); the first session builds the images in its VM and saves them for the next ones",
        );
        return Ok(ExitStatus::Success);
    }
    crate::placement::golden::prepare(ctx, settings).await?;
    Ok(ExitStatus::Success)
}
