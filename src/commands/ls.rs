//! `sbx ls`: sessions that are running, died, or kept work; `--all` adds finished ones.

use clap::Args;
use serde::Serialize;

use crate::context::Context;
use crate::exit::ExitStatus;
use crate::state::{self, Phase};
use crate::worktree::session_branch;

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
    /// Include finished sessions that kept nothing.
    #[arg(long)]
    pub all: bool,
}

#[derive(Serialize)]
struct Row {
    id: String,
    state: &'static str,
    created: u64,
    age: String,
    command: Vec<String>,
    vm: Option<String>,
    repos: Vec<RepoRow>,
}

#[derive(Serialize)]
struct RepoRow {
    name: String,
    host_repo: String,
    path: String,
    /// The branch the session's commits are (or will be) on.
    branch: Option<String>,
    kept: Option<String>,
    /// Set when sbx could not make the kept checkout safe to run git in, with why.
    not_safe: Option<String>,
}

pub async fn run(
    ctx: &Context,
    args: LsArgs,
    _docker_host: Option<String>,
) -> anyhow::Result<ExitStatus> {
    let mut rows = Vec::new();
    for (dir, r) in state::list(&ctx.dirs.sessions()) {
        let live = state::is_live(&dir);
        let kept = r
            .outcomes
            .iter()
            .any(|o| o.kept.is_some() && o.path.exists());
        let not_safe = r
            .outcomes
            .iter()
            .any(|o| o.not_safe.is_some() && o.path.exists());
        let st = match (r.phase, live) {
            (Phase::Running, true) => "running",
            (Phase::Running, false) => "dead",
            (Phase::Finished, _) if not_safe => "NOT SAFE",
            (Phase::Finished, _) if kept => "kept",
            (Phase::Finished, _) => "finished",
        };
        if st == "finished" && !args.all {
            continue;
        }
        let repos = if r.phase == Phase::Finished {
            r.outcomes
                .iter()
                .map(|o| RepoRow {
                    name: o.name.clone(),
                    host_repo: o.host_root.display().to_string(),
                    path: o.path.display().to_string(),
                    branch: o.branch.clone(),
                    kept: o.kept.clone(),
                    not_safe: o.not_safe.clone(),
                })
                .collect()
        } else {
            r.checkouts
                .iter()
                .map(|c| RepoRow {
                    name: c.name.clone(),
                    host_repo: c.host_root.display().to_string(),
                    path: c.path.display().to_string(),
                    branch: Some(session_branch(&r.id)),
                    kept: None,
                    not_safe: None,
                })
                .collect()
        };
        rows.push(Row {
            id: r.id.clone(),
            state: st,
            created: r.created,
            age: state::age(r.created),
            command: r.command.clone(),
            vm: r.vm.clone(),
            repos,
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitStatus::Success);
    }
    if rows.is_empty() {
        ctx.ui.info("no sessions");
        return Ok(ExitStatus::Success);
    }
    println!(
        "{:<10} {:<9} {:>5}  {:<20} REPOS",
        "ID", "STATE", "AGE", "COMMAND"
    );
    let running = rows
        .iter()
        .find(|r| r.state == "running")
        .map(|r| r.id.clone());
    for r in rows {
        let repos: Vec<String> = r
            .repos
            .iter()
            .map(|x| {
                let mut s = crate::text::printable(&x.name);
                if let Some(b) = &x.branch {
                    s.push_str(&format!(" [{b}]"));
                }
                if x.not_safe.is_some() {
                    s.push_str(&format!(
                        " kept at {} (NOT SAFE: do not run git there)",
                        x.path
                    ));
                } else if x.kept.is_some() {
                    s.push_str(&format!(" kept at {}", x.path));
                }
                s
            })
            .collect();
        let cmd: String = crate::text::printable(&r.command.join(" "))
            .chars()
            .take(20)
            .collect();
        let vm =
            r.vm.as_ref()
                .map(|v| format!("  [VM {v}]"))
                .unwrap_or_default();
        println!(
            "{:<10} {:<9} {:>5}  {:<20} {}{vm}",
            r.id,
            r.state,
            r.age,
            cmd,
            repos.join(", ")
        );
    }
    if let Some(id) = running {
        ctx.ui.info(format!(
            "`sbx exec {id}` opens a shell in a running session (`-- CMD` runs a command)"
        ));
    }
    Ok(ExitStatus::Success)
}
