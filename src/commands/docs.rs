//! `sbx completions SHELL` and `sbx man`: shell completions and the man page, generated from the
//! clap definitions (the caller hands them in), so they always match the command line they
//! describe.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use crate::exit::ExitStatus;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write `sbx.1` and a page per command (`sbx-run.1`, ...) into this folder instead.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Completions for `cli`, the whole command line.
pub fn completions(args: CompletionsArgs, mut cli: clap::Command) -> anyhow::Result<ExitStatus> {
    let mut text = Vec::new();
    clap_complete::generate(args.shell, &mut cli, "sbx", &mut text);
    print(&text)
}

/// Writes to stdout; a reader that stopped early (`| head`) is no failure.
fn print(bytes: &[u8]) -> anyhow::Result<ExitStatus> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitStatus::Success),
    }
}

/// The man page(s) of `cli`, the whole command line.
pub fn man(args: ManArgs, cli: clap::Command) -> anyhow::Result<ExitStatus> {
    match args.dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cli).render(&mut page)?;
            return print(&page);
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| anyhow::anyhow!("cannot create `{}`: {e}", dir.display()))?;
            clap_mangen::generate_to(cli, &dir).map_err(|e| {
                anyhow::anyhow!("cannot write the man pages in `{}`: {e}", dir.display())
            })?;
        }
    }
    Ok(ExitStatus::Success)
}
