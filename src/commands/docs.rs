//! `sbx completions SHELL` and `sbx man`: shell completions and the man page, generated from the
//! clap definitions, so they always match the command line they describe.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;

pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<i32> {
    let mut text = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "sbx", &mut text);
    print(&text)
}

/// Writes to stdout; a reader that stopped early (`| head`) is no failure.
fn print(bytes: &[u8]) -> anyhow::Result<i32> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(0),
    }
}

pub fn man(dir: Option<&Path>) -> anyhow::Result<i32> {
    let cmd = Cli::command();
    match dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            return print(&page);
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("cannot create `{}`: {e}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir).map_err(|e| {
                anyhow::anyhow!("cannot write the man pages in `{}`: {e}", dir.display())
            })?;
        }
    }
    Ok(0)
}
