//! `sbx setup`: check the engine and bring the images up to date (a quick no-op when nothing
//! changed: only fingerprints are compared).

use crate::cli::SetupArgs;
use crate::config::Layer;
use crate::engine::Engine;
use crate::session::{self, Context};

pub async fn run(
    ctx: &Context,
    _args: SetupArgs,
    docker_host: Option<String>,
) -> anyhow::Result<i32> {
    let settings = super::load_settings(ctx, super::project_root().as_deref(), Layer::default())?;
    let specs = session::image_specs(&settings)?;
    let engine = Engine::connect(&super::endpoint(ctx, &settings, docker_host)).await?;
    let built = session::ensure_images(&ctx.ui, &engine, &specs).await?;
    if !built {
        ctx.ui.info("images are up to date");
    }
    Ok(0)
}
