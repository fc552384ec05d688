//! `sbx cache ls|rm`: the package caches sessions keep per project (see `caches`).

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use serde::Serialize;

use crate::caches::{KIND_LABEL, PROJECT_LABEL};
use crate::config::Layer;
use crate::container::OWNER_LABEL;
use crate::context::Context;
use crate::engine::Engine;
use crate::exit::ExitStatus;

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List the projects with package caches, and which caches each has.
    Ls {
        /// Machine-readable output on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Remove the current repository's package caches (`--all`: every project's).
    Rm {
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub command: CacheCommand,
}

#[derive(Serialize)]
struct Row {
    project: String,
    kinds: Vec<String>,
    volumes: Vec<String>,
}

impl Row {
    /// The repository, as people name it (the label holds its `.git` folder).
    fn repo(&self) -> &str {
        self.project.strip_suffix("/.git").unwrap_or(&self.project)
    }
}

pub async fn run(
    ctx: &Context,
    args: CacheArgs,
    docker_host: Option<String>,
) -> anyhow::Result<ExitStatus> {
    let settings = super::load_settings(ctx, None, Layer::default())?;
    let engine = Engine::connect(&super::endpoint(ctx, &settings, docker_host)).await?;
    let owner = ctx.dirs.owner_tag();
    let volumes = engine
        .volumes(&[format!("{OWNER_LABEL}={owner}"), PROJECT_LABEL.to_owned()])
        .await?;
    let mut projects: BTreeMap<String, Row> = BTreeMap::new();
    for (name, labels) in volumes {
        let project = labels.get(PROJECT_LABEL).cloned().unwrap_or_default();
        let row = projects.entry(project.clone()).or_insert_with(|| Row {
            project,
            kinds: Vec::new(),
            volumes: Vec::new(),
        });
        row.kinds
            .push(labels.get(KIND_LABEL).cloned().unwrap_or_default());
        row.volumes.push(name);
    }
    match args.command {
        CacheCommand::Ls { json } => {
            let rows: Vec<&Row> = projects.values().collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(ExitStatus::Success);
            }
            if rows.is_empty() {
                ctx.ui
                    .info("no package caches (sessions make them unless `caches: false`)");
                return Ok(ExitStatus::Success);
            }
            let p = crate::text::printable;
            for r in rows {
                // The project path is a label anyone with the engine could have set: escaped.
                println!("{}  {}", p(r.repo()), p(&r.kinds.join(", ")));
            }
            Ok(ExitStatus::Success)
        }
        CacheCommand::Rm { all } => {
            let chosen: Vec<&Row> = if all {
                projects.values().collect()
            } else {
                let repo = super::primary_repo(&[])?;
                let key = repo.common_dir.display().to_string();
                projects.get(&key).into_iter().collect()
            };
            if chosen.is_empty() {
                ctx.ui.info("no package caches to remove");
                return Ok(ExitStatus::Success);
            }
            let mut failed = 0;
            for r in chosen {
                for v in &r.volumes {
                    if let Err(e) = engine.remove_volume(v).await {
                        failed += 1;
                        ctx.ui
                            .warn(format!("kept `{v}`: {e} (is a session of it running?)"));
                    }
                }
                ctx.ui.info(format!(
                    "removed the package caches of `{}`",
                    crate::text::printable(r.repo())
                ));
            }
            Ok(if failed == 0 {
                ExitStatus::Success
            } else {
                ExitStatus::Problem
            })
        }
    }
}
