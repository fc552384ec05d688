//! `sbx login`: Claude Code's long-lived sign-in (`claude setup-token`) in a sandbox that
//! reaches only what the sign-in needs, its token kept with `sbx token`'s storage as `claude`,
//! so every later session is signed in (`CLAUDE_CODE_OAUTH_TOKEN`) with nothing mounted.

use crate::claude::login;
use crate::config::{ClaudeConfig, Forward, ForwardKeyword, GitMode, Layer, Source};
use crate::context::Context;
use crate::exit::ExitStatus;
use crate::keychain::{self, Tokens};
use crate::session::{self, RunRequest};

pub async fn run(ctx: &Context, docker_host: Option<String>) -> anyhow::Result<ExitStatus> {
    if !(crate::terminal::stdin_is_tty() && crate::terminal::stdout_is_tty()) {
        return Err(crate::error::hinted(
            "`sbx login` needs a terminal: the sign-in asks you to paste a code",
            "elsewhere, run `claude setup-token` where you can, then `sbx token set claude`",
        ));
    }
    // The user's own settings only: a repository's `.sbx.yaml` has no say in a sign-in.
    let mut settings = super::load_settings(ctx, None, Layer::default())?;
    let tokens = Tokens::open(settings.token_store, &ctx.dirs.config)?;
    settings.default_allowlist = false;
    settings.allow = login::HOSTS.iter().map(|h| (*h).to_owned()).collect();
    settings.allow_sources = vec![Source::Default; login::HOSTS.len()];
    settings.repos = Vec::new();
    settings.claude.config = ClaudeConfig::None;
    settings.tokens.forward = Forward::Keyword(ForwardKeyword::None);
    settings.git.mode = GitMode::Isolated;
    // The sign-in shows the token: no record of it in a file.
    settings.record = false;
    // A throwaway repository: nothing worth caching, nothing to leave behind.
    settings.caches = false;
    let repo = super::throwaway_repo("sbx-login-").await?;
    ctx.ui.info(format!(
        "signing in with `claude setup-token` in a sandbox that reaches only {}",
        login::HOSTS.join(", ")
    ));
    let req = RunRequest {
        endpoint: super::endpoint(ctx, &settings, docker_host),
        settings,
        repos: vec![crate::worktree::discover(repo.path())?],
        command: login::COMMAND.iter().map(|s| (*s).to_owned()).collect(),
        keep: false,
        secrets: Vec::new(),
        output: crate::engine::attach::Output::Tee,
        vm: None,
    };
    let mut out = session::run(ctx, req).await?;
    let size = crate::terminal::size().unwrap_or((24, 80));
    let token = login::token_from_output(&out.output, size);
    out.output.fill(0);
    match (out.exit_code, token) {
        (0, Some(token)) => {
            let env = keychain::env_for("claude", None)?;
            tokens.set("claude", &env, &token)?;
            ctx.ui.info(format!(
                "stored your Claude login in the {} as `claude`: every session gets it as `{env}` (`sbx token rm claude` forgets it)",
                tokens.store_name
            ));
            Ok(ExitStatus::Success)
        }
        (0, None) => Err(crate::error::hinted(
            "`claude setup-token` ended without showing a token sbx could read; nothing was stored",
            "if it showed one, copy it and run `sbx token set claude`",
        )),
        (code, _) => Err(crate::error::hinted(
            format!("`claude setup-token` ended with exit code {code}; nothing was stored"),
            format!(
                "run `sbx login` again; `sbx log {}` shows what the sign-in looked up",
                out.session_id
            ),
        )),
    }
}
