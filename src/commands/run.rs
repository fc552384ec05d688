//! `sbx run`: resolve the repositories and settings, then hand the session to the library.

use std::path::PathBuf;

use clap::Args;

use crate::config::{ClaudeConfig, Layer, Settings};
use crate::context::Context;
use crate::exit::ExitStatus;
use crate::keychain::{KeychainError, Secret, Tokens};
use crate::session::{self, RunRequest};
use crate::state::TokenSource;
use crate::worktree;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A repository to put in the sandbox (repeatable; default: the one containing the current
    /// folder). Each is at `/workspace/<folder name>`.
    #[arg(long = "repo", value_name = "PATH")]
    pub repos: Vec<PathBuf>,
    /// Also allow this destination: a host name, `*.domain`, an IP or a CIDR, with optional
    /// `:PORT` (repeatable).
    #[arg(long = "allow", value_name = "ENTRY")]
    pub allow: Vec<String>,
    /// Attach the session to this existing Docker network instead of its own.
    #[arg(long, value_name = "NAME")]
    pub network: Option<String>,
    /// Keep every checkout at the end, clean or not.
    #[arg(long)]
    pub keep: bool,
    /// Run in a fresh VM cloned from the golden one (`sbx setup --vm` makes it): kernel
    /// isolation between the agent and this machine.
    #[arg(long)]
    pub vm: bool,
    /// Print where the session's time went (to stderr).
    #[arg(long)]
    pub timings: bool,
    /// The command and its arguments (after `--`).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub async fn run(
    ctx: &Context,
    args: RunArgs,
    docker_host: Option<String>,
) -> anyhow::Result<ExitStatus> {
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
    let settings_vm = settings.vm.provider;
    let secrets = session_tokens(ctx, &settings)?;
    let req = RunRequest {
        settings,
        repos,
        command,
        keep: args.keep,
        secrets,
        endpoint,
        output: crate::engine::attach::Output::Pass,
        vm: args.vm.then_some(settings_vm),
    };
    let out = session::run(ctx, req).await?;
    if args.timings {
        if crate::env::var(crate::env::SBX_TIMINGS).as_deref() == Some("json") {
            eprintln!("sbx-timings: {}", out.timings.to_json());
        } else {
            eprint!("{}", out.timings.render());
        }
    }
    Ok(ExitStatus::Command(out.exit_code))
}

/// The tokens this session forwards, as `(VARIABLE, value)`: every stored token the
/// `tokens.forward` setting includes, and a host `GH_TOKEN` when no `github` token is stored.
pub fn session_tokens(
    ctx: &Context,
    settings: &Settings,
) -> anyhow::Result<Vec<(TokenSource, Secret)>> {
    let mut out = Vec::new();
    let tokens = Tokens::open(settings.token_store, &ctx.dirs.config);
    let index = match &tokens {
        Ok(t) => t.index()?,
        Err(_) => Default::default(),
    };
    let wanted: Vec<_> = index
        .iter()
        .filter(|(name, _)| settings.tokens.forward.includes(name))
        .collect();
    if !wanted.is_empty() {
        let tokens = tokens?;
        for (name, entry) in wanted {
            match tokens.get(name) {
                Ok(secret) => out.push((
                    TokenSource {
                        env: entry.env.clone(),
                        stored: Some(name.clone()),
                    },
                    secret,
                )),
                Err(KeychainError::Missing { .. }) => ctx.ui.warn(format!(
                    "token `{name}` is listed but missing from the {}; store it again with `sbx token set {name}`",
                    tokens.store_name
                )),
                Err(e) => return Err(e.into()),
            }
        }
    }
    let host_gh_token = crate::env::var(crate::env::GH_TOKEN).filter(|v| !v.is_empty());
    if let Some(v) = host_gh_token
        .filter(|_| !index.contains_key("github") && settings.tokens.forward.includes("github"))
    {
        ctx.ui.info(
            "forwarding `GH_TOKEN` from your environment; keep it in the keychain instead with `sbx token set github`",
        );
        let source = TokenSource {
            env: "GH_TOKEN".into(),
            stored: None,
        };
        out.push((source, Secret::new(v)));
    }
    if cfg!(target_os = "macos")
        && settings.claude.config == ClaudeConfig::Mount
        && !index.contains_key("claude")
    {
        ctx.ui.info(
            "Claude Code keeps its login in the macOS Keychain, which the sandbox cannot read: run `sbx login` once (Claude Code's `claude setup-token` in a sandbox; the token it shows goes to your Keychain as `claude`)",
        );
    }
    Ok(out)
}
