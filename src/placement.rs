//! Where a session's containers run: the local engine, a remote engine over SSH, a clone of the
//! golden Lima VM, or a fresh Colima profile. [`choose`] decides once from the request; the
//! session then drives the choice through [`Placement`] (bring up with mounts, tear down) and
//! never names a provider. `sbx gc` removes dead sessions' VMs through the same trait. The golden
//! VM itself is `vm::golden`'s.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::{Settings, VmProvider};
use crate::context::Context;
use crate::guest::{self, Guest};
use crate::imagecache::ImageCache;
use crate::vm::{self, Lima, VmMount};

pub mod golden;
use crate::worktree::Checkout;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Hears when each step of bringing up or tearing down began (`vm boot`, `vm delete`, ...).
pub type Phase<'a> = &'a (dyn Fn(&'static str, Instant) + Send + Sync);

/// What bringing up a placement needs of the session.
pub struct Up<'a> {
    pub ctx: &'a Context,
    pub id: &'a str,
    /// The session folder.
    pub dir: &'a Path,
    pub settings: &'a Settings,
    /// What a VM shares of this machine ([`Placement::mounts`]).
    pub mounts: &'a [VmMount],
    pub phase: Phase<'a>,
}

/// One way of running a session's containers. Bringing up may be cut short at any await (a
/// signal); whatever it made is remembered inside, so `tear_down` undoes exactly that.
pub trait Placement: Send + Sync {
    /// The session's VM, named before it is made, and its provider (for the session record, so
    /// `sbx gc` can finish a session that died).
    fn vm(&self, id: &str) -> Option<(String, VmProvider)>;
    /// Whether the session may claim a gate started ahead (`spare`): only on its own engine on
    /// this machine.
    fn spare(&self) -> bool;
    /// What the session shares with a VM: the session folder and what the checkouts borrow
    /// (nothing without a VM).
    fn mounts(&self, dir: &Path, checkouts: &[Checkout]) -> anyhow::Result<Vec<VmMount>>;
    /// Brings up where the containers run; returns the engine endpoint to connect to.
    fn bring_up<'a>(&'a self, up: Up<'a>) -> BoxFuture<'a, anyhow::Result<String>>;
    /// The host-side image cache the session uses, when its engine starts empty.
    fn image_cache(&self, _ctx: &Context, _mounts: &[VmMount]) -> Option<ImageCache> {
        None
    }
    /// Undoes whatever `bring_up` made (idempotent).
    fn tear_down<'a>(&'a self, phase: Phase<'a>) -> BoxFuture<'a, ()>;
    /// For `sbx gc`: deletes the VM of the dead session in `dir` whose record names `recorded`;
    /// returns the name deleted (nothing where a session has no VM).
    fn remove_dead_vm<'a>(
        &'a self,
        _ctx: &'a Context,
        _dir: &'a Path,
        _recorded: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<Option<String>>> {
        Box::pin(async { Ok(None) })
    }
    /// For `sbx gc`: deletes the session VMs of this kind whose sessions are not alive (`live`)
    /// and not already deleted (`done`); returns their names.
    fn remove_dead_vms<'a>(
        &'a self,
        _ctx: &'a Context,
        _live: &'a [String],
        _done: &'a [String],
    ) -> BoxFuture<'a, anyhow::Result<Vec<String>>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// The placement a session record names (`vm_provider`), to finish that session's VM.
pub fn recorded(provider: Option<&str>) -> Arc<dyn Placement> {
    match provider {
        Some("colima") => Arc::new(ColimaProfile::default()),
        _ => Arc::new(LimaClone::default()),
    }
}

/// The placements that leave VMs behind when a session dies, for `sbx gc`.
pub fn with_vms() -> [Arc<dyn Placement>; 2] {
    [
        Arc::new(LimaClone::default()),
        Arc::new(ColimaProfile::default()),
    ]
}

/// The placement for a session: a VM of `vm`'s provider, else the engine at `endpoint` (over
/// SSH for `ssh://`).
pub fn choose(vm: Option<VmProvider>, endpoint: &str) -> Arc<dyn Placement> {
    match vm {
        Some(VmProvider::Lima) => Arc::new(LimaClone::default()),
        Some(VmProvider::Colima) => Arc::new(ColimaProfile::default()),
        None if endpoint.starts_with("ssh://") => Arc::new(Remote {
            endpoint: endpoint.to_owned(),
            guest: Mutex::default(),
        }),
        None => Arc::new(Local {
            endpoint: endpoint.to_owned(),
        }),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The engine on this machine (or wherever `DOCKER_HOST` points, other than SSH).
pub struct Local {
    pub endpoint: String,
}

impl Placement for Local {
    fn vm(&self, _: &str) -> Option<(String, VmProvider)> {
        None
    }
    fn spare(&self) -> bool {
        true
    }
    fn mounts(&self, _: &Path, _: &[Checkout]) -> anyhow::Result<Vec<VmMount>> {
        Ok(Vec::new())
    }
    fn bring_up<'a>(&'a self, _: Up<'a>) -> BoxFuture<'a, anyhow::Result<String>> {
        Box::pin(async move { Ok(self.endpoint.clone()) })
    }
    fn tear_down<'a>(&'a self, _: Phase<'a>) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// A remote engine, `ssh://user@host[:port]`: its Docker socket forwarded over SSH.
pub struct Remote {
    endpoint: String,
    guest: Mutex<Option<Guest>>,
}

impl Placement for Remote {
    fn vm(&self, _: &str) -> Option<(String, VmProvider)> {
        None
    }
    fn spare(&self) -> bool {
        false
    }
    fn mounts(&self, _: &Path, _: &[Checkout]) -> anyhow::Result<Vec<VmMount>> {
        Ok(Vec::new())
    }
    fn bring_up<'a>(&'a self, up: Up<'a>) -> BoxFuture<'a, anyhow::Result<String>> {
        Box::pin(async move {
            let began = Instant::now();
            let target = guest::remote_target(
                &self.endpoint,
                &up.ctx.dirs.home,
                &up.ctx.dirs.cache.join("vm"),
            )?;
            let guest = guest::connect(&target, up.dir).await?;
            let endpoint = guest.endpoint();
            *lock(&self.guest) = Some(guest);
            (up.phase)("remote connect", began);
            Ok(endpoint)
        })
    }
    fn tear_down<'a>(&'a self, _: Phase<'a>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Some(g) = lock(&self.guest).take() {
                g.close();
            }
        })
    }
}

/// What a session VM holds while it lives: the installation that made it, its name, and the
/// SSH connection to it.
#[derive(Default)]
struct SessionVm {
    made: Mutex<Option<(Lima, String)>>,
    guest: Mutex<Option<Guest>>,
}

impl SessionVm {
    /// Proves the mounts are the session's own (and, for Lima, shares them with the agent's
    /// ids), then keeps the connection; on failure it is closed.
    async fn connected(
        &self,
        up: &Up<'_>,
        name: &str,
        guest: Guest,
        nonces: guest::Nonces,
        share: bool,
    ) -> anyhow::Result<String> {
        let checked = async {
            let began = Instant::now();
            guest.prove_mounts(name, &nonces).await?;
            (up.phase)("vm mounts proven", began);
            if share {
                let began = Instant::now();
                guest
                    .share_mounts(up.mounts, crate::hostids::agent_ids()?)
                    .await?;
                (up.phase)("vm mounts shared", began);
            }
            Ok::<_, anyhow::Error>(())
        }
        .await;
        drop(nonces);
        if let Err(e) = checked {
            guest.close();
            return Err(e);
        }
        let endpoint = guest.endpoint();
        *lock(&self.guest) = Some(guest);
        Ok(endpoint)
    }

    async fn tear_down(&self, phase: Phase<'_>) {
        if let Some(g) = lock(&self.guest).take() {
            g.close();
        }
        let made = lock(&self.made).take();
        if let Some((lima, name)) = made {
            let began = Instant::now();
            let _ = lima.remove_session_vm(&name).await;
            phase("vm delete", began);
        }
    }
}

/// A clone of the golden VM (`sbx setup --vm`), booted with only the session's mounts.
#[derive(Default)]
pub struct LimaClone {
    vm: SessionVm,
}

impl Placement for LimaClone {
    fn vm(&self, id: &str) -> Option<(String, VmProvider)> {
        Some((vm::session_vm(id), VmProvider::Lima))
    }
    fn spare(&self) -> bool {
        false
    }
    fn mounts(&self, dir: &Path, checkouts: &[Checkout]) -> anyhow::Result<Vec<VmMount>> {
        Ok(guest::session_mounts(dir, checkouts)?)
    }
    fn bring_up<'a>(&'a self, up: Up<'a>) -> BoxFuture<'a, anyhow::Result<String>> {
        Box::pin(async move {
            let vm_cache = up.ctx.dirs.cache.join("vm");
            let lima = Lima::locate(&up.ctx.dirs, VmProvider::Lima).await?;
            let name = vm::session_vm(up.id);
            // Written before the VM exists, read inside it before anything runs there.
            let nonces = guest::Nonces::plant(up.id, up.mounts)?;
            let golden = golden::current(&lima, up.settings)
                .await?
                .ok_or(vm::VmError::GoldenStale)?;
            golden::mark_used(&vm_cache, &golden);
            *lock(&self.vm.made) = Some((lima.clone(), name.clone()));
            let phase = |n, began| (up.phase)(n, began);
            let guest =
                guest::boot_session_vm(&lima, &golden, &name, up.mounts, &vm_cache, up.dir, &mut {
                    phase
                })
                .await?;
            self.vm.connected(&up, &name, guest, nonces, true).await
        })
    }
    fn tear_down<'a>(&'a self, phase: Phase<'a>) -> BoxFuture<'a, ()> {
        Box::pin(self.vm.tear_down(phase))
    }
    fn remove_dead_vm<'a>(
        &'a self,
        ctx: &'a Context,
        dir: &'a Path,
        recorded: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<Option<String>>> {
        Box::pin(remove_dead_vm(ctx, dir, recorded, VmProvider::Lima))
    }
    /// Never the golden one, never a VM another sbx installation sharing `LIMA_HOME` made (only
    /// those of this cache's sessions).
    fn remove_dead_vms<'a>(
        &'a self,
        ctx: &'a Context,
        live: &'a [String],
        done: &'a [String],
    ) -> BoxFuture<'a, anyhow::Result<Vec<String>>> {
        Box::pin(async move {
            let mut removed = Vec::new();
            let Ok(lima) = Lima::locate(&ctx.dirs, VmProvider::Lima).await else {
                return Ok(removed);
            };
            for inst in lima.list_prefixed("sbx-").await.unwrap_or_default() {
                let id = inst.name.trim_start_matches("sbx-");
                if !golden::is_golden(&inst.name)
                    && dead(id, live)
                    && ctx.dirs.session(id).exists()
                    && !done.contains(&inst.name)
                {
                    lima.delete(&inst.name).await?;
                    removed.push(inst.name.clone());
                }
            }
            Ok(removed)
        })
    }
}

fn dead(id: &str, live: &[String]) -> bool {
    crate::state::valid_id(id) && !live.iter().any(|l| l == id)
}

/// A fresh Colima profile per session, in sbx's own Colima home. Its engine starts empty: the
/// images come from sbx's image cache when an earlier session saved them, else they are built.
#[derive(Default)]
pub struct ColimaProfile {
    vm: SessionVm,
}

impl Placement for ColimaProfile {
    fn vm(&self, id: &str) -> Option<(String, VmProvider)> {
        Some((vm::session_vm(id), VmProvider::Colima))
    }
    fn spare(&self) -> bool {
        false
    }
    fn mounts(&self, dir: &Path, checkouts: &[Checkout]) -> anyhow::Result<Vec<VmMount>> {
        Ok(guest::session_mounts(dir, checkouts)?)
    }
    fn bring_up<'a>(&'a self, up: Up<'a>) -> BoxFuture<'a, anyhow::Result<String>> {
        Box::pin(async move {
            let vm_cache = up.ctx.dirs.cache.join("vm");
            let lima = Lima::locate(&up.ctx.dirs, VmProvider::Colima).await?;
            let name = vm::session_vm(up.id);
            let nonces = guest::Nonces::plant(up.id, up.mounts)?;
            // A folder Colima would mangle (or mount another in its place) stops the session
            // before anything boots.
            vm::check_colima_mounts(up.mounts)?;
            *lock(&self.vm.made) = Some((lima.clone(), name.clone()));
            let inst = lima.colima_start(&name, &up.settings.vm, up.mounts).await?;
            let guest = guest::connect_instance(&lima, &inst, &vm_cache, up.dir).await?;
            guest
                .wait_for_docker(&name, guest::DOCKER_READY_LIMIT)
                .await?;
            // Colima's own image has no bindfs (sbx does not provision it): its sessions see
            // the owners Colima's file sharing reports (see the README).
            self.vm.connected(&up, &name, guest, nonces, false).await
        })
    }
    /// Only while no folder the VM may write holds the cache (a writable mount above it would
    /// let the VM replace the images every later session loads).
    fn image_cache(&self, ctx: &Context, mounts: &[VmMount]) -> Option<ImageCache> {
        let dir = ctx.dirs.cache.join("vm").join("images");
        let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
        let cache_real = real(&ctx.dirs.cache);
        if let Some(m) = mounts.iter().find(|m| {
            m.writable && (dir.starts_with(&m.path) || cache_real.starts_with(real(&m.path)))
        }) {
            ctx.ui.warn(format!(
                "not using sbx's image cache: the session VM may write `{}`, which holds it",
                m.path.display()
            ));
            return None;
        }
        Some(ImageCache::new(dir))
    }
    fn tear_down<'a>(&'a self, phase: Phase<'a>) -> BoxFuture<'a, ()> {
        Box::pin(self.vm.tear_down(phase))
    }
    fn remove_dead_vm<'a>(
        &'a self,
        ctx: &'a Context,
        dir: &'a Path,
        recorded: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<Option<String>>> {
        Box::pin(remove_dead_vm(ctx, dir, recorded, VmProvider::Colima))
    }
    /// Every profile in sbx's own Colima home is one of this cache's sessions (Colima is not run
    /// at all when that home was never made).
    fn remove_dead_vms<'a>(
        &'a self,
        ctx: &'a Context,
        live: &'a [String],
        done: &'a [String],
    ) -> BoxFuture<'a, anyhow::Result<Vec<String>>> {
        Box::pin(async move {
            let mut removed = Vec::new();
            if !vm::sbx_colima_home(&ctx.dirs.cache).is_dir() {
                return Ok(removed);
            }
            let Ok(lima) = Lima::locate_colima(&ctx.dirs.cache).await else {
                return Ok(removed);
            };
            for profile in lima.colima_session_profiles().await.unwrap_or_default() {
                let id = profile.trim_start_matches("sbx-");
                if dead(id, live) && !done.contains(&profile) {
                    lima.colima_delete(&profile).await?;
                    removed.push(profile);
                }
            }
            Ok(removed)
        })
    }
}

/// Deletes the VM of a dead session whose record names one. The record lies in the session
/// folder, which the session's VM may write: only the name sbx gives this folder's VM is ever
/// deleted (not another session's, nor one of yours).
async fn remove_dead_vm(
    ctx: &Context,
    dir: &Path,
    recorded: &str,
    provider: VmProvider,
) -> anyhow::Result<Option<String>> {
    use anyhow::Context as _;
    let id = crate::paths::base_name(dir);
    let name = vm::session_vm(&id);
    if recorded != name {
        ctx.ui.warn(format!(
            "the record of session `{id}` names the VM `{}`; deleting `{name}`, the one sbx made for it",
            crate::text::printable(recorded)
        ));
    }
    let lima = Lima::locate(&ctx.dirs, provider)
        .await
        .with_context(|| format!("it left the VM `{name}`, which sbx cannot reach"))?;
    lima.remove_session_vm(&name).await?;
    Ok(Some(name))
}
