//! `sbx run`: resolve the repositories and settings, then hand the session to the library.

use crate::cli::RunArgs;
use crate::config::Layer;
use crate::session::{self, Context, RunRequest};
use crate::worktree;

pub async fn run(ctx: &Context, args: RunArgs, docker_host: Option<String>) -> anyhow::Result<i32> {
    let primary = super::primary_repo(&args.repos)?;
    let flags = Layer {
        allow: (!args.allow.is_empty()).then(|| args.allow.clone()),
        network: args.network.clone(),
        ..Layer::default()
    };
    let settings = super::load_settings(ctx, Some(&primary.root), flags)?;
    let mut repos = vec![primary];
    for p in args.repos.iter().skip(1).chain(settings.repos.iter()) {
        let r = worktree::discover(p)?;
        if !repos.iter().any(|x| x.root == r.root) {
            repos.push(r);
        }
    }
    for r in &repos {
        for n in r.notes() {
            ctx.ui.info(n);
        }
    }
    let command = if args.command.is_empty() {
        settings.command.clone()
    } else {
        args.command.clone()
    };
    let endpoint = super::endpoint(ctx, &settings, docker_host);
    let req = RunRequest {
        settings,
        repos,
        command,
        keep: args.keep,
        secrets: Vec::new(),
        endpoint,
    };
    let out = session::run(ctx, req).await?;
    if args.timings {
        eprint!("{}", out.timings.render());
    }
    Ok(out.exit_code)
}
