//! `sbx config show`: every setting, its value and where it came from, and whether the project
//! file is approved. It shows a file nobody approved (with what it would widen) instead of
//! refusing it: reading settings is how a user decides.

use clap::{Args, Subcommand};

use crate::config::Layer;
use crate::context::Context;
use crate::exit::ExitStatus;
use crate::trust::{Status, Widening};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print every setting, its value and its source.
    Show {
        /// Machine-readable output on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

pub fn run(
    ctx: &Context,
    args: ConfigArgs,
    docker_host: Option<String>,
) -> anyhow::Result<ExitStatus> {
    match args.command {
        ConfigCommand::Show { json } => show(ctx, json, docker_host),
    }
}

fn show(ctx: &Context, json: bool, docker_host: Option<String>) -> anyhow::Result<ExitStatus> {
    let flags = Layer {
        docker_host,
        ..Layer::default()
    };
    let loaded = super::load(ctx, super::project_root().as_deref(), flags)?;
    let settings = &loaded.settings;
    let rows = settings.rows();
    let file = loaded
        .project
        .as_ref()
        .map(|p| crate::text::printable(&p.path.display().to_string()))
        .unwrap_or_else(|| "(none)".into());
    let (status, widenings): (&str, &[Widening]) = match &loaded.status {
        Status::Absent => ("absent", &[]),
        Status::NarrowsOnly => ("narrows-only", &[]),
        Status::Trusted(w) => ("trusted", w),
        Status::Untrusted(w) => ("untrusted", w),
    };
    let note = match &loaded.status {
        Status::Absent => "no project file".to_owned(),
        Status::NarrowsOnly => "widens nothing, needs no approval".to_owned(),
        Status::Trusted(_) => "trusted as it is now".to_owned(),
        Status::Untrusted(_) => {
            "NOT trusted: sbx refuses it until you approve it with `sbx trust`".to_owned()
        }
    };
    let allowlist = settings.allowlist_rows();
    if json {
        let mut v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(k, v)| {
                serde_json::json!({
                    "key": k, "value": v, "source": settings.source_of(k).to_string()
                })
            })
            .collect();
        v.push(serde_json::json!({
            "key": "project_file", "value": file, "source": note,
            "status": status, "widens": widenings,
        }));
        v.push(serde_json::json!({
            "key": "allowlist",
            "value": allowlist.iter().map(|a| serde_json::json!({
                "entry": a.entry, "source": a.source.to_string(), "reason": a.reason,
            })).collect::<Vec<_>>(),
            "source": "the built-in entries (unless `default_allowlist` is false) and every `allow`",
        }));
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(10);
        // Values come from files a repository may have written: shown escaped.
        let p = crate::text::printable;
        for (k, v) in &rows {
            println!(
                "{k:<width$}  {}  # {}",
                p(v),
                p(&settings.source_of(k).to_string())
            );
        }
        println!("{:<width$}  {}  # {}", "project_file", p(&file), p(&note));
        for w in widenings {
            println!("{:<width$}    # {w}", "");
        }
        println!(
            "\nallowlist ({} entries; each opens ports 80 and 443 unless it names a port):",
            allowlist.len()
        );
        let ewidth = allowlist.iter().map(|a| a.entry.len()).max().unwrap_or(10);
        for a in &allowlist {
            let from = match &a.reason {
                Some(r) => format!("built in: {r}"),
                None => a.source.to_string(),
            };
            println!("  {:<ewidth$}  # {}", p(&a.entry), p(&from));
        }
        if !settings.default_allowlist {
            println!("  # the built-in entries are off (`default_allowlist: false`)");
        }
    }
    Ok(ExitStatus::Success)
}
