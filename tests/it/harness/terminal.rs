//! sbx on a pseudo-terminal (made by util-linux `script`, see [`Need::Terminal`]), and the screen
//! a terminal would show.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::*;

impl TestEnv {
    /// Runs `sbx ARGS` (a shell-quoted string) in a pseudo-terminal of `cols` x `rows` made by
    /// `script`, with this environment (progress bars on) plus `extra`, and `input` as the keys
    /// typed. Returns what the terminal received and the exit code.
    pub fn in_terminal(
        &self,
        cwd: impl AsRef<Path>,
        args: &str,
        (cols, rows): (u16, u16),
        extra: &[(&str, &str)],
        input: &[u8],
    ) -> (Vec<u8>, Option<i32>) {
        use std::io::Write;
        let cmd = format!(
            "stty cols {cols} rows {rows}; exec {} {args}",
            sbx_bin().display()
        );
        let mut child = Command::new("script")
            .args(["-qfec", &cmd, "/dev/null"])
            .env_clear()
            .envs(self.vars())
            .env("TERM", "xterm-256color")
            // A terminal is where a person sees progress bars.
            .env_remove("SBX_NO_PROGRESS")
            .envs(extra.iter().copied())
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        // Typed after a pause, as a person would (what is typed early may reach no one).
        std::thread::spawn(move || {
            for chunk in input.split_inclusive(|b| *b == b'\r') {
                std::thread::sleep(Duration::from_secs(3));
                let _ = stdin.write_all(chunk);
                let _ = stdin.flush();
            }
            std::thread::sleep(Duration::from_secs(120));
        });
        let o = child.wait_with_output().unwrap();
        (o.stdout, o.status.code())
    }
}

/// The rows of a terminal of `cols` x `rows` after it received `bytes`, trailing spaces cut.
pub fn screen_rows(bytes: &[u8], (cols, rows): (u16, u16)) -> Vec<String> {
    let nz = |n: u16| std::num::NonZero::new(n).expect("a terminal has rows and columns");
    let mut p = vt100::Parser::new(nz(rows), nz(cols), 0);
    p.process(bytes);
    p.screen()
        .rows(0, cols)
        .map(|r| r.trim_end().to_owned())
        .collect()
}
