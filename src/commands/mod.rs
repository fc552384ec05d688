//! The subcommands: each owns its arguments (clap `Args`, composed into the command line by
//! `cli`) and turns them into library calls, output and an exit status. Shared here: loading
//! settings for the current folder (with the project file's approval checked).

pub mod allow;
pub mod bench;
pub mod cache;
pub mod config;
pub mod docs;
pub mod doctor;
pub mod exec;
pub mod gc;
pub mod log;
pub mod login;
pub mod ls;
pub mod run;
pub mod setup;
pub mod spare;
pub mod token;
pub mod trust;

use std::path::{Path, PathBuf};

use crate::config::{Layer, PROJECT_FILE, ProjectFile, Settings};
use crate::context::Context;
use crate::trust::{Approvals, Status};
use crate::worktree::{self, GitError, Repo};

fn cwd() -> anyhow::Result<PathBuf> {
    std::env::current_dir().map_err(|e| anyhow::anyhow!("cannot read the current folder: {e}"))
}

/// Settings as loaded, with where the project file stands.
pub struct Loaded {
    pub settings: Settings,
    pub project: Option<ProjectFile>,
    pub status: Status,
}

/// Settings for a project root (when there is one), with the given flags on top, refusing a
/// project file that widens the sandbox without the user's approval: on a terminal sbx asks,
/// elsewhere it stops. A repository is the agent's work (a kept checkout, a merged session
/// branch) or a stranger's, so its file must not pick the engine that gets the tokens, mount
/// other repositories or open egress on its own. The user file, `SBX_*` and flags are the
/// user's own word and never questioned.
pub fn load_settings(
    ctx: &Context,
    project_root: Option<&Path>,
    flags: Layer,
) -> anyhow::Result<Settings> {
    let loaded = load(ctx, project_root, flags)?;
    if let (Status::Untrusted(widenings), Some(file)) = (&loaded.status, &loaded.project) {
        trust::confirm(ctx, file, widenings)?;
    }
    Ok(loaded.settings)
}

/// Settings and the project file's standing, without acting on it (for `sbx config show`).
pub fn load(ctx: &Context, project_root: Option<&Path>, flags: Layer) -> anyhow::Result<Loaded> {
    let user = Settings::user(&ctx.dirs.user_config_file())?;
    // Read once: the bytes weighed and approved are the bytes that take effect.
    let project = match project_root {
        Some(root) => ProjectFile::read(&root.join(PROJECT_FILE))?,
        None => None,
    };
    // The file is weighed by what it changes in the settings that take effect: the user's
    // environment and flags apply after it, and may have narrowed what it would widen again
    // (`SBX_DEFAULT_ALLOWLIST=false` with a file listing the default hosts).
    let (env, cwd) = (crate::env::settings(), cwd()?);
    let below = user
        .clone()
        .with_env_and_flags(env.clone(), &cwd, flags.clone())?;
    let mut settings = user
        .with_project(project.as_ref())?
        .with_env_and_flags(env, &cwd, flags)?;
    settings.image.claude_code_refresh = claude_code_refresh(ctx);
    let status = approvals(ctx).status(project.as_ref(), &below, &settings)?;
    Ok(Loaded {
        settings,
        project,
        status,
    })
}

/// Where `sbx setup --update` keeps the stamp that makes image builds fetch the newest Claude
/// Code (kept, so that a later rebuild for another reason does not go back to an older one).
pub fn refresh_file(ctx: &Context) -> PathBuf {
    ctx.dirs.cache.join("claude-code-refresh")
}

fn claude_code_refresh(ctx: &Context) -> Option<String> {
    let text = std::fs::read_to_string(refresh_file(ctx)).ok()?;
    let stamp = text.trim();
    (!stamp.is_empty() && stamp.len() <= 32 && stamp.chars().all(|c| c.is_ascii_alphanumeric()))
        .then(|| stamp.to_owned())
}

/// An empty repository in a temporary folder (removed when dropped), for a session that works
/// on none of the user's (`sbx doctor --leaks`, `sbx login`).
pub async fn throwaway_repo(prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
    let commit = [
        "-c",
        "user.name=sbx",
        "-c",
        "user.email=sbx@localhost",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "sbx",
    ];
    crate::process::Cmd::git(dir.path())
        .args(["init", "-q"])
        .run()
        .await?;
    crate::process::Cmd::git(dir.path())
        .args(commit)
        .run()
        .await?;
    Ok(dir)
}

/// The user's project-file approvals.
pub fn approvals(ctx: &Context) -> Approvals {
    Approvals::new(ctx.dirs.trust())
}

/// The primary repository: the first `--repo`, or the one containing the current folder.
pub fn primary_repo(repos: &[PathBuf]) -> Result<Repo, GitError> {
    match repos.first() {
        Some(p) => worktree::discover(p),
        None => worktree::discover(&cwd().map_err(|_| GitError::NotARepo {
            path: PathBuf::from("."),
        })?),
    }
}

/// The project folder for `.sbx.yaml` when the current folder is in a repository.
pub fn project_root() -> Option<PathBuf> {
    primary_repo(&[]).ok().map(|r| r.root)
}

/// The engine endpoint for these settings and flags.
pub fn endpoint(ctx: &Context, settings: &Settings, flag: Option<String>) -> String {
    crate::engine::resolve_endpoint(
        flag.as_deref().or(settings.docker_host.as_deref()),
        &crate::engine::EndpointEnv::from_env(&ctx.dirs.home),
    )
}
