//! `sbx setup [--vm]`: check the engine and bring the images up to date (a quick no-op when
//! nothing changed: only fingerprints are compared); with `--vm`, prepare the golden VM that
//! session VMs are cloned from, with a bar per phase.

use std::time::Duration;

use crate::cli::SetupArgs;
use crate::config::{Layer, Settings, VmProvider};
use crate::context::Context;
use crate::engine::Engine;
use crate::session;
use crate::vm::{self, Lima};

pub async fn run(
    ctx: &Context,
    args: SetupArgs,
    docker_host: Option<String>,
) -> anyhow::Result<i32> {
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
    let built = session::ensure_images(&ctx.ui, &engine, &specs).await?;
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
    Ok(0)
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

/// Prepares (or confirms) the golden VM for these settings: create, first boot, Docker inside,
/// the images inside, stop and protect (protection marks it complete). Golden VMs of other
/// settings stay (a few, the most recently used), so projects do not rebuild one in turn.
async fn golden(ctx: &Context, settings: &Settings) -> anyhow::Result<i32> {
    if settings.vm.provider == VmProvider::Colima {
        ctx.ui.info(
            "Colima boots a fresh profile for every session (no golden VM to prepare; slower than Lima); the first session builds the images in its VM and saves them for the next ones",
        );
        return Ok(0);
    }
    let lima = Lima::locate(&ctx.dirs, settings.vm.provider).await?;
    legacy_golden_notice(ctx);
    let cache = ctx.dirs.cache.join("vm");
    crate::state::create_private_dir(&cache)?;
    let (template, fingerprint) = crate::guest::golden_plan(settings)?;
    let name = vm::golden_name(&fingerprint);
    let existing = lima.get(&name).await?;
    if existing.as_ref().is_some_and(|i| i.protected) {
        crate::guest::mark_used(&cache, &name);
        ctx.ui.info("the golden VM is up to date");
        return Ok(0);
    }
    let bar = ctx.ui.bar("golden VM");
    let result = build_golden(
        ctx,
        &lima,
        &cache,
        &name,
        &template,
        settings,
        existing.is_some(),
        &bar,
    )
    .await;
    match result {
        Ok(()) => {
            crate::guest::mark_used(&cache, &name);
            bar.finish("ready");
            prune_goldens(ctx, &lima, &cache, &name).await;
            Ok(0)
        }
        Err(e) => {
            bar.abandon();
            // Nothing half-made stays running.
            let _ = lima.delete(&name).await;
            Err(e)
        }
    }
}

/// Older sbx kept its golden VM in the user's own Lima home; it is no longer used.
fn legacy_golden_notice(ctx: &Context) {
    let home = std::env::var_os("LIMA_HOME")
        .filter(|h| !h.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| ctx.dirs.home.join(".lima"));
    if home.join(vm::LEGACY_GOLDEN).join("lima.yaml").exists() {
        ctx.ui.info(format!(
            "the golden VM of an older sbx is still in `{}` and no longer used: remove it with `limactl unprotect {g} && limactl delete {g}`",
            home.display(),
            g = vm::LEGACY_GOLDEN
        ));
    }
}

/// Removes golden VMs beyond the most recently used few, and the single golden VM of older sbx.
async fn prune_goldens(ctx: &Context, lima: &Lima, cache: &std::path::Path, keep: &str) {
    let Ok(all) = lima.list_prefixed("sbx-").await else {
        return;
    };
    let mut goldens: Vec<_> = all
        .into_iter()
        .filter(|i| vm::is_golden(&i.name) && i.name != keep)
        .map(|i| (crate::guest::last_used(cache, &i.name), i.name))
        .collect();
    goldens.sort();
    // Oldest first: beyond the few kept (this one included), and any of older sbx, go.
    let extra = goldens.len().saturating_sub(vm::GOLDENS_KEPT - 1);
    let gone: Vec<String> = goldens
        .into_iter()
        .enumerate()
        .filter(|(i, (_, n))| *i < extra || n == vm::LEGACY_GOLDEN)
        .map(|(_, (_, n))| n)
        .collect();
    for name in gone {
        let removed = async {
            lima.protect(&name, false).await?;
            lima.delete(&name).await
        }
        .await;
        match removed {
            Ok(()) => ctx
                .ui
                .info(format!("removed the unused golden VM `{name}`")),
            Err(e) => ctx
                .ui
                .warn(format!("could not remove the golden VM `{name}`: {e}")),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn build_golden(
    ctx: &Context,
    lima: &Lima,
    cache: &std::path::Path,
    name: &str,
    template: &str,
    settings: &Settings,
    replace: bool,
    bar: &crate::progress::Bar,
) -> anyhow::Result<()> {
    const PHASES: u64 = 5;
    bar.phase(1, PHASES, "create");
    if replace {
        // Left unfinished by an interrupted setup (it was never protected).
        lima.delete(name).await?;
    }
    let file = cache.join("golden.yaml");
    std::fs::write(&file, template)?;
    lima.create(name, &file).await?;
    crate::ssh::forget(&crate::guest::known_hosts(cache), name);

    bar.phase(2, PHASES, "first boot");
    let inst = lima.start(name, Duration::from_secs(1800)).await?;
    let guest = crate::guest::connect_instance(lima, &inst, cache, cache).await?;

    bar.phase(3, PHASES, "provisioning Docker inside");
    let (code, out) = guest
        .ssh()
        .exec(
            &format!(
                "sudo sh -s -- {}",
                crate::guest::shell_word(&inst.config.user.name)
            ),
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
    // A new login: the docker group membership provisioning added applies only from there.
    let guest = crate::guest::connect_instance(lima, &inst, cache, cache).await?;
    guest
        .wait_for_docker(name, crate::guest::DOCKER_READY_LIMIT)
        .await?;
    let engine = Engine::connect(&guest.endpoint()).await?;
    session::ensure_images(&ctx.ui, &engine, &crate::image::specs(settings)?).await?;
    guest.close();

    bar.phase(5, PHASES, "stopping");
    lima.stop(name).await?;
    lima.protect(name, true).await?;
    Ok(())
}
