//! `sbx gc`: finishes what dead sessions left (their containers and networks, their VMs, their
//! checkouts) and removes records of long-finished sessions with nothing kept. Never touches a
//! live session, nor anything of another owner.

use std::path::{Path, PathBuf};

use anyhow::bail;

use super::finish;
use crate::context::Context;
use crate::engine::EngineApi;
use crate::placement;
use crate::state::{self, Lock, Phase, Record};
use crate::worktree::Outcome;

/// What `sbx gc` did.
#[derive(Debug, Default)]
pub struct GcReport {
    pub sessions_finished: Vec<String>,
    pub containers_removed: Vec<String>,
    pub networks_removed: Vec<String>,
    pub vms_removed: Vec<String>,
    pub outcomes: Vec<Outcome>,
    pub folders_removed: Vec<PathBuf>,
    /// Sessions that could not be finished (each reported as it happened).
    pub failed: Vec<String>,
}

/// Finishes one dead session: its VM or containers and networks, its checkouts (commits imported
/// first, dirty ones kept) and its Claude configuration copy; or, long finished with nothing
/// kept, removes its folder.
async fn gc_session<E: EngineApi>(
    ctx: &Context,
    engine: Option<&E>,
    dir: &Path,
    mut record: Record,
    report: &mut GcReport,
) -> anyhow::Result<()> {
    if record.phase == Phase::Finished {
        let old =
            state::now().saturating_sub(record.ended.unwrap_or(record.created)) > 7 * 24 * 3600;
        let kept = record
            .outcomes
            .iter()
            .any(|o| o.kept.is_some() && o.path.exists());
        if old && !kept {
            // Its logs and leftovers are the agent's: removed without following links.
            let parent = dir.parent().unwrap_or(dir);
            let name = dir.file_name().unwrap_or_default();
            crate::safefs::Dir::open(parent)?.remove_tree(name)?;
            report.folders_removed.push(dir.to_owned());
        }
        return Ok(());
    }
    if let Some(recorded) = &record.vm {
        // The containers live and die with the session's VM.
        let name = placement::recorded(record.vm_provider.as_deref())
            .remove_dead_vm(ctx, dir, recorded)
            .await?;
        report.vms_removed.extend(name);
    } else if let Some(engine) = engine {
        for c in &record.containers {
            engine.remove_container(c).await?;
            report.containers_removed.push(c.clone());
        }
        for n in &record.networks {
            engine.remove_network(n).await?;
            report.networks_removed.push(n.clone());
        }
    } else if !record.containers.is_empty() {
        bail!(
            "it left containers on `{}`, which is not reachable; run `sbx gc` again when it is",
            record.endpoint
        );
    }
    let outcomes = finish::checkouts(record.checkouts.clone(), &record.id, false).await?;
    report.outcomes.extend(outcomes.clone());
    finish::record(ctx, dir, &mut record, outcomes)?;
    report.sessions_finished.push(record.id.clone());
    Ok(())
}

/// Finishes what dead sessions left: their containers and networks, their checkouts (commits
/// imported first, dirty ones kept), and records of long-finished sessions with nothing kept.
/// Never touches a live session.
pub async fn gc<E: EngineApi>(ctx: &Context, engine: Option<&E>) -> anyhow::Result<GcReport> {
    let mut report = GcReport::default();
    let sessions = ctx.dirs.sessions();
    let mut live_ids = Vec::new();
    for (dir, record) in state::list(&sessions) {
        if state::is_live(&dir) {
            live_ids.push(record.id.clone());
            continue;
        }
        let Some(_lock) = Lock::acquire(&dir)? else {
            live_ids.push(record.id.clone());
            continue;
        };
        // One session that cannot be finished (its files are the agent's) stops nothing else.
        let id = record.id.clone();
        if let Err(e) = gc_session(ctx, engine, &dir, record, &mut report).await {
            ctx.ui.warn(format!(
                "could not finish session `{id}`: {e:#}; the rest goes on"
            ));
            report.failed.push(id);
        }
    }
    for p in placement::with_vms() {
        let vms = p
            .remove_dead_vms(ctx, &live_ids, &report.vms_removed)
            .await?;
        report.vms_removed.extend(vms);
    }
    // Anything labelled by sbx whose session is not alive (its folder may be gone entirely).
    if let Some(engine) = engine {
        let (containers, networks) = engine.labelled(&ctx.dirs.owner_tag()).await?;
        for c in containers.iter().filter(|c| !live_ids.contains(&c.session)) {
            engine.remove_container(&c.name).await?;
            if !report.containers_removed.contains(&c.name) {
                report.containers_removed.push(c.name.clone());
            }
        }
        for n in networks.iter().filter(|n| !live_ids.contains(&n.session)) {
            engine.remove_network(&n.name).await?;
            if !report.networks_removed.contains(&n.name) {
                report.networks_removed.push(n.name.clone());
            }
        }
    }
    Ok(report)
}
