//! `sbx exec [SESSION] [-- CMD]`: a second command (a login shell by default) in a running
//! session's agent container, under exactly the agent's restrictions: the same container (so
//! the same firewall, filesystem and limits), user, working folder and environment, tokens
//! included. Ending it never ends the session; the session's end ends it.
//!
//! The session record is read as untrusted (in VM mode its folder is shared with the VM): the
//! user must be the agent's unprivileged ids, the folder under `/workspace`, the environment is
//! rebuilt here, and a token goes in only if the record says the session had it *and* the
//! user's settings forward it now.

use clap::Args;

use crate::config::Layer;
use crate::context::Context;
use crate::engine::attach::Output;
use crate::engine::{Engine, ExecSpec};
use crate::exit::ExitStatus;
use crate::session;
use crate::state::{self, Phase, Record};

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The running session (id or a unique prefix); not needed when only one runs.
    pub session: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub async fn run(ctx: &Context, args: ExecArgs) -> anyhow::Result<ExitStatus> {
    let (dir, record) = match &args.session {
        Some(id) => super::log::find(ctx, id)?,
        None => only_running(ctx)?,
    };
    if !state::is_live(&dir) || record.phase != Phase::Running {
        return Err(crate::error::hinted(
            format!("session `{}` is not running", record.id),
            "`sbx ls` lists the running sessions",
        ));
    }
    let Some(exec) = &record.exec else {
        return Err(crate::error::hinted(
            format!("session `{}` has not started its command yet", record.id),
            "try again in a moment",
        ));
    };
    let user = checked_user(&exec.user)?;
    anyhow::ensure!(
        exec.working_dir.starts_with("/workspace/") && !exec.working_dir.contains(".."),
        "the session record names an unexpected working folder; not running anything in it"
    );
    let settings = super::load_settings(ctx, None, Layer::default())?;
    let tokens: Vec<_> = super::run::session_tokens(ctx, &settings)?
        .into_iter()
        .filter(|(source, _)| exec.tokens.contains(source))
        .collect();
    for t in exec
        .tokens
        .iter()
        .filter(|t| !tokens.iter().any(|(s, _)| s == *t))
    {
        ctx.ui.warn(format!(
            "`{}` is not forwarded to this exec: your settings no longer forward it, or it is gone",
            t.env
        ));
    }
    let command = if args.command.is_empty() {
        vec!["bash".to_owned(), "-l".to_owned()]
    } else {
        args.command.clone()
    };
    let tty = crate::terminal::stdin_is_tty() && crate::terminal::stdout_is_tty();
    let spec = ExecSpec {
        cmd: command,
        user,
        env: session::exec_env(
            session::agent_env(&record.id, exec.claude),
            tty,
            tokens.iter().map(|(s, v)| (s.env.as_str(), v)),
        ),
        working_dir: Some(exec.working_dir.clone()),
        tty,
        stdin: true,
        size: if tty { crate::terminal::size() } else { None },
    };
    let engine = Engine::connect(&record.endpoint).await?;
    let agent = crate::container::agent_name(&record.id);
    ctx.ui.fresh_line();
    let result = crate::engine::attach::run(&engine, &agent, spec, Output::Pass, None).await;
    ctx.ui.fresh_line();
    let result = result.map_err(|e| {
        anyhow::Error::from(e).context(format!(
            "could not run the command in session `{}` (it may have just ended)",
            record.id
        ))
    })?;
    Ok(ExitStatus::Command(
        i32::try_from(result.code).unwrap_or(255),
    ))
}

/// The one running session, when there is exactly one.
fn only_running(ctx: &Context) -> anyhow::Result<(std::path::PathBuf, Record)> {
    let mut running: Vec<_> = state::list(&ctx.dirs.sessions())
        .into_iter()
        .filter(|(dir, r)| r.phase == Phase::Running && state::is_live(dir))
        .collect();
    match running.len() {
        1 => Ok(running.remove(0)),
        0 => Err(crate::error::hinted(
            "no session is running",
            "start one with `sbx run`",
        )),
        n => Err(crate::error::hinted(
            format!("{n} sessions are running; say which: `sbx exec SESSION`"),
            "`sbx ls` lists them (a unique prefix of the id is enough)",
        )),
    }
}

/// The agent's `uid:gid` from the record: numbers, never root's.
fn checked_user(user: &str) -> anyhow::Result<String> {
    let ids = user
        .split_once(':')
        .and_then(|(u, g)| Some((u.parse::<u32>().ok()?, g.parse::<u32>().ok()?)));
    match ids {
        Some((u, g)) if u != 0 && g != 0 => Ok(format!("{u}:{g}")),
        _ => anyhow::bail!(
            "the session record names an unexpected user `{}`; not running anything as it",
            crate::text::printable(user)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_agents_unprivileged_ids_are_used() {
        assert_eq!(checked_user("1000:1000").unwrap(), "1000:1000");
        for bad in [
            "0:0",
            "0:1000",
            "1000:0",
            "root",
            "1000",
            "1000:x",
            "",
            "1000:1000:1",
        ] {
            assert!(checked_user(bad).is_err(), "{bad}");
        }
    }
}
