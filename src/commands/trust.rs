//! `sbx trust [PATH]` and `sbx trust --revoke [PATH]`: approve, for its current content, a
//! project file that widens the sandbox, or withdraw that approval; and the question every
//! command asks on a terminal before it obeys a file nobody approved.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use clap::Args;

use crate::config::{PROJECT_FILE, ProjectFile, Settings};
use crate::context::Context;
use crate::exit::ExitStatus;
use crate::trust::{self, TrustError, Widening};

/// `mise trust`'s verb (`allow` is taken by egress) and direnv's `revoke`; `--untrust` is
/// mise's spelling of the same.
#[derive(Debug, Args)]
pub struct TrustArgs {
    /// The project file, or the folder that holds it (default: the current repository's
    /// `.sbx.yaml`).
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,
    /// Withdraw the approval instead: sbx asks again before obeying the file.
    #[arg(long, visible_alias = "untrust")]
    pub revoke: bool,
}

pub fn run(ctx: &Context, args: TrustArgs) -> anyhow::Result<ExitStatus> {
    let path = target(args.path.as_deref())?;
    let shown = crate::text::printable(&path.display().to_string());
    let approvals = super::approvals(ctx);
    if args.revoke {
        if approvals.revoke(&path)? {
            ctx.ui.info(format!(
                "revoked the approval of `{shown}`; sbx asks again before obeying it"
            ));
        } else {
            ctx.ui.info(format!("`{shown}` was not trusted"));
        }
        return Ok(ExitStatus::Success);
    }
    let Some(file) = ProjectFile::read(&path)? else {
        return Err(crate::error::hinted(
            format!("there is no `{shown}`"),
            "give the path of a `.sbx.yaml`, or run `sbx trust` in its repository",
        ));
    };
    let below = Settings::user(&ctx.dirs.user_config_file())?;
    let widenings = trust::widenings(&below, &below.with_project(Some(&file))?);
    if widenings.is_empty() {
        ctx.ui.info(format!(
            "`{shown}` widens nothing at the moment (it needs no approval)"
        ));
    } else {
        let lines: String = widenings.iter().map(|w| format!("\n    {w}")).collect();
        ctx.ui.info(format!("`{shown}` widens the sandbox:{lines}"));
    }
    approvals.trust(&file)?;
    ctx.ui.info(format!(
        "trusted `{shown}` as it is now (sha256 {}); sbx asks again when it changes",
        &crate::trust::digest(&file)[..12]
    ));
    Ok(ExitStatus::Success)
}

/// The project file a `sbx trust` means: the path given (a `.sbx.yaml`, or the folder holding
/// one), else the current repository's.
fn target(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let Some(given) = given else {
        return match super::project_root() {
            Some(root) => Ok(root.join(PROJECT_FILE)),
            None => Err(crate::error::hinted(
                "not inside a git repository, so there is no `.sbx.yaml` to trust",
                "run `sbx trust` in the repository, or give the file: `sbx trust PATH`",
            )),
        };
    };
    let path = super::cwd()?.join(given);
    if path.is_dir() {
        let dir = std::fs::canonicalize(&path).unwrap_or(path);
        return Ok(dir.join(PROJECT_FILE));
    }
    if path.file_name().is_none_or(|n| n != PROJECT_FILE) {
        return Err(crate::error::hinted(
            format!(
                "`{}` is not a project file",
                crate::text::printable(&path.display().to_string())
            ),
            "sbx reads only `.sbx.yaml` at a repository's root; give that file or its folder",
        ));
    }
    Ok(path)
}

/// Lets a command go on with a project file nobody approved only when the user says so now, on
/// a terminal (stdin and stderr both TTYs); the answer `y` approves this content. Anywhere else
/// (CI, scripts, pipes) sbx stops: nobody is there to read the file.
pub fn confirm(ctx: &Context, file: &ProjectFile, widenings: &[Widening]) -> anyhow::Result<()> {
    let interactive = crate::terminal::stdin_is_tty() && crate::terminal::stderr_is_tty();
    if !interactive {
        return Err(TrustError::Untrusted {
            path: file.path.clone(),
            widenings: widenings.to_vec(),
        }
        .into());
    }
    let yes = ask(
        &mut std::io::stdin().lock(),
        &mut std::io::stderr(),
        &file.path,
        widenings,
    )?;
    if !yes {
        return Err(TrustError::Declined {
            path: file.path.clone(),
        }
        .into());
    }
    super::approvals(ctx).trust(file)?;
    ctx.ui.info(format!(
        "trusted `{}` as it is now; `sbx trust --revoke` withdraws that",
        crate::text::printable(&file.path.display().to_string())
    ));
    Ok(())
}

/// Shows what a file widens and asks; only `y` or `yes` is a yes (end of input is a no).
fn ask(
    input: &mut impl BufRead,
    out: &mut impl Write,
    path: &Path,
    widenings: &[Widening],
) -> std::io::Result<bool> {
    writeln!(
        out,
        "sbx: `{}` widens the sandbox:",
        crate::text::printable(&path.display().to_string())
    )?;
    for w in widenings {
        writeln!(out, "    {w}")?;
    }
    write!(out, "trust this file? [y/N] ")?;
    out.flush()?;
    let mut answer = String::new();
    input.read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(answer: &str) -> (bool, String) {
        let w = [Widening {
            key: "allow",
            what: "adds 0.0.0.0/0:443".into(),
        }];
        let mut out = Vec::new();
        let yes = ask(
            &mut answer.as_bytes(),
            &mut out,
            Path::new("/r/.sbx.yaml"),
            &w,
        )
        .unwrap();
        (yes, String::from_utf8(out).unwrap())
    }

    #[test]
    fn the_question_shows_the_widenings_and_defaults_to_no() {
        let (yes, out) = asked("y\n");
        assert!(yes);
        assert_eq!(
            out,
            "sbx: `/r/.sbx.yaml` widens the sandbox:\n    `allow`: adds 0.0.0.0/0:443\ntrust this file? [y/N] "
        );
        assert!(asked("YES\n").0);
        for no in ["\n", "", "n\n", "no\n", "yes please\n", "sure\n"] {
            assert!(!asked(no).0, "{no:?}");
        }
    }
}
