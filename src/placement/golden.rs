//! The golden VM: the one owner of its state. Its name comes from a fingerprint of what it holds
//! (template, provisioning, images), so projects with different settings each keep theirs; it
//! is complete once protected; `<cache>/vm/used/<name>` says when it was last used, so `sbx setup
//! --vm` keeps the few in use. Sessions clone it (`placement::LimaClone`).

use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::config::Settings;
use crate::context::Context;
use crate::engine::Engine;
use crate::progress::Bar;
use crate::vm::{self, Lima};

/// Golden VMs are named `sbx-g-<fingerprint prefix>`: one per set of settings, so projects with
/// different images or VM sizes each keep theirs instead of rebuilding one back and forth.
pub const PREFIX: &str = "sbx-g-";
/// The single golden VM of sbx before 0.2 (removed when found).
pub const LEGACY: &str = "sbx-golden";
/// How many golden VMs `sbx setup --vm` keeps (the most recently used).
pub const KEPT: usize = 3;

/// The golden VM for a fingerprint.
pub fn name_for(fingerprint: &str) -> String {
    format!("{PREFIX}{}", &fingerprint[..12.min(fingerprint.len())])
}

pub fn is_golden(name: &str) -> bool {
    name.starts_with(PREFIX) || name == LEGACY
}

/// What decides whether the golden VM must be rebuilt: template, provisioning and images.
pub fn fingerprint(template: &str, image_fingerprints: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(template.as_bytes());
    h.update(b"\0");
    h.update(vm::PROVISION_DOCKER.as_bytes());
    for f in image_fingerprints {
        h.update(b"\0");
        h.update(f.as_bytes());
    }
    hex::encode(h.finalize())
}

/// What the golden VM should be for these settings: its template and fingerprint.
pub fn plan(settings: &Settings) -> anyhow::Result<(String, String)> {
    let template = vm::render_template(&settings.vm, vm::default_vm_type());
    let images: Vec<String> = crate::image::specs(settings)?
        .into_iter()
        .map(|s| s.fingerprint)
        .collect();
    let fp = fingerprint(&template, &images);
    Ok((template, fp))
}

/// The golden VM for these settings, when it is ready to clone: made to the end by `sbx setup
/// --vm` (which protects it last) and stopped.
pub async fn current(lima: &Lima, settings: &Settings) -> anyhow::Result<Option<String>> {
    let (_, fp) = plan(settings)?;
    let name = name_for(&fp);
    Ok(lima.get(&name).await?.filter(|i| i.protected).map(|_| name))
}

/// Notes that a golden VM was used now (`<cache>/used/<name>`), so `sbx setup --vm` keeps the
/// ones in use.
pub fn mark_used(vm_cache: &Path, golden: &str) {
    let dir = vm_cache.join("used");
    if crate::state::create_private_dir(&dir).is_ok() {
        let _ = std::fs::write(dir.join(golden), b"");
    }
}

/// When a golden VM was last used (or made), for pruning.
pub fn last_used(vm_cache: &Path, golden: &str) -> Option<std::time::SystemTime> {
    std::fs::metadata(vm_cache.join("used").join(golden))
        .and_then(|m| m.modified())
        .ok()
}

/// What `prepare` works on.
struct Golden<'a> {
    lima: &'a Lima,
    cache: &'a Path,
    name: &'a str,
    template: &'a str,
}

/// Prepares (or confirms) the golden VM for these settings: create, first boot, Docker inside,
/// the images inside, stop and protect (protection marks it complete). Golden VMs of other
/// settings stay (a few, the most recently used), so projects do not rebuild one in turn.
pub async fn prepare(ctx: &Context, settings: &Settings) -> anyhow::Result<()> {
    let lima = Lima::locate(&ctx.dirs, settings.vm.provider).await?;
    legacy_notice(ctx);
    let cache = ctx.dirs.cache.join("vm");
    crate::state::create_private_dir(&cache)?;
    let (template, fingerprint) = plan(settings)?;
    let name = name_for(&fingerprint);
    let existing = lima.get(&name).await?;
    if existing.as_ref().is_some_and(|i| i.protected) {
        mark_used(&cache, &name);
        ctx.ui.info("the golden VM is up to date");
        return Ok(());
    }
    let bar = ctx.ui.bar("golden VM");
    let g = Golden {
        lima: &lima,
        cache: &cache,
        name: &name,
        template: &template,
    };
    match build(ctx, &g, settings, existing.is_some(), &bar).await {
        Ok(()) => {
            mark_used(&cache, &name);
            bar.finish("ready");
            prune(ctx, &lima, &cache, &name).await;
            Ok(())
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
fn legacy_notice(ctx: &Context) {
    let home = crate::env::non_empty(crate::env::LIMA_HOME)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| ctx.dirs.home.join(".lima"));
    if home.join(LEGACY).join("lima.yaml").exists() {
        ctx.ui.info(format!(
            "the golden VM of an older sbx is still in `{}` and no longer used: remove it with `limactl unprotect {g} && limactl delete {g}`",
            home.display(),
            g = LEGACY
        ));
    }
}

/// Removes golden VMs beyond the most recently used few, and the single golden VM of older sbx.
async fn prune(ctx: &Context, lima: &Lima, cache: &std::path::Path, keep: &str) {
    let Ok(all) = lima.list_prefixed("sbx-").await else {
        return;
    };
    let mut goldens: Vec<_> = all
        .into_iter()
        .filter(|i| is_golden(&i.name) && i.name != keep)
        .map(|i| (last_used(cache, &i.name), i.name))
        .collect();
    goldens.sort();
    // Oldest first: beyond the few kept (this one included), and any of older sbx, go.
    let extra = goldens.len().saturating_sub(KEPT - 1);
    let gone: Vec<String> = goldens
        .into_iter()
        .enumerate()
        .filter(|(i, (_, n))| *i < extra || n == LEGACY)
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

/// Makes the golden VM to the end; protecting it is the last step, the mark that it is complete.
async fn build(
    ctx: &Context,
    g: &Golden<'_>,
    settings: &Settings,
    replace: bool,
    bar: &Bar,
) -> anyhow::Result<()> {
    let Golden {
        lima,
        cache,
        name,
        template,
    } = *g;
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
    crate::imagebuild::ensure(&ctx.ui, &engine, &crate::image::specs(settings)?).await?;
    guest.close();

    bar.phase(5, PHASES, "stopping");
    lima.stop(name).await?;
    lima.protect(name, true).await?;
    Ok(())
}
