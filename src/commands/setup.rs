//! `sbx setup [--vm]`: check the engine and bring the images up to date (a quick no-op when
//! nothing changed: only fingerprints are compared); with `--vm`, prepare the golden VM that
//! session VMs are cloned from, with a bar per phase.

use std::time::Duration;

use crate::cli::SetupArgs;
use crate::config::{Layer, Settings, VmProvider};
use crate::engine::Engine;
use crate::session::{self, Context};
use crate::vm::{self, Lima};

pub async fn run(
    ctx: &Context,
    args: SetupArgs,
    docker_host: Option<String>,
) -> anyhow::Result<i32> {
    let settings = super::load_settings(ctx, super::project_root().as_deref(), Layer::default())?;
    if args.vm {
        return golden(ctx, &settings).await;
    }
    let specs = crate::image::specs(&settings)?;
    let engine = Engine::connect(&super::endpoint(ctx, &settings, docker_host)).await?;
    let built = session::ensure_images(&ctx.ui, &engine, &specs).await?;
    if !built {
        ctx.ui.info("images are up to date");
    }
    Ok(0)
}

/// Prepares (or confirms) the golden VM: create, first boot, Docker inside, the images inside,
/// stop and protect.
async fn golden(ctx: &Context, settings: &Settings) -> anyhow::Result<i32> {
    if settings.vm.provider == VmProvider::Colima {
        ctx.ui.info(
            "Colima boots a fresh profile for every session (no golden VM to prepare; slower than Lima); the first session builds the images in its VM and saves them for the next ones",
        );
        return Ok(0);
    }
    let lima = Lima::locate(&ctx.dirs.home).await?;
    let cache = ctx.dirs.cache.join("vm");
    crate::state::create_private_dir(&cache)?;
    let (template, fingerprint) = crate::guest::golden_plan(settings)?;
    let existing = lima.get(vm::GOLDEN).await?;
    if existing.is_some()
        && crate::guest::golden_state(&cache).as_deref() == Some(fingerprint.as_str())
    {
        ctx.ui.info("the golden VM is up to date");
        return Ok(0);
    }
    let bar = ctx.ui.bar("golden VM");
    let result = build_golden(
        ctx,
        &lima,
        &cache,
        &template,
        settings,
        existing.is_some(),
        &bar,
    )
    .await;
    match result {
        Ok(()) => {
            std::fs::write(
                cache.join("golden.json"),
                serde_json::json!({ "fingerprint": fingerprint }).to_string(),
            )?;
            bar.finish("ready");
            Ok(0)
        }
        Err(e) => {
            bar.abandon();
            // Nothing half-made stays running.
            let _ = lima.protect(vm::GOLDEN, false).await;
            let _ = lima.delete(vm::GOLDEN).await;
            Err(e)
        }
    }
}

async fn build_golden(
    ctx: &Context,
    lima: &Lima,
    cache: &std::path::Path,
    template: &str,
    settings: &Settings,
    replace: bool,
    bar: &crate::progress::Bar,
) -> anyhow::Result<()> {
    const PHASES: u64 = 5;
    bar.phase(1, PHASES, "create");
    if replace {
        lima.protect(vm::GOLDEN, false).await?;
        lima.delete(vm::GOLDEN).await?;
    }
    let file = cache.join("golden.yaml");
    std::fs::write(&file, template)?;
    lima.create(vm::GOLDEN, &file).await?;
    crate::ssh::forget(&crate::guest::known_hosts(cache), vm::GOLDEN);

    bar.phase(2, PHASES, "first boot");
    let inst = lima.start(vm::GOLDEN, Duration::from_secs(1800)).await?;
    let socket = cache.join("golden-docker.sock");
    let guest = crate::guest::connect_instance(lima, &inst, cache, &socket).await?;

    bar.phase(3, PHASES, "provisioning Docker inside");
    let (code, out) = guest
        .ssh()
        .exec(
            &format!("sudo sh -s -- {}", shell_word(&inst.config.user.name)),
            vm::PROVISION_DOCKER.as_bytes(),
        )
        .await?;
    guest.close();
    anyhow::ensure!(
        code == 0,
        "provisioning Docker in the golden VM failed:\n{}",
        out.trim()
    );

    bar.phase(4, PHASES, "building the sandbox image inside");
    // A new login picks up the docker group membership provisioning added.
    let guest = crate::guest::connect_instance(lima, &inst, cache, &socket).await?;
    let engine = Engine::connect(&guest.endpoint()).await?;
    session::ensure_images(&ctx.ui, &engine, &crate::image::specs(settings)?).await?;
    guest.close();

    bar.phase(5, PHASES, "stopping");
    lima.stop(vm::GOLDEN).await?;
    lima.protect(vm::GOLDEN, true).await?;
    Ok(())
}

/// Quotes a word for a POSIX shell.
fn shell_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
