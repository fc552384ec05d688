//! Output for people: messages on stderr (`sbx:`, `warning:`, `error:`, `hint:`), and progress
//! bars (indicatif) on a terminal, plain lines elsewhere. Bars are hidden with `--quiet`,
//! `SBX_NO_PROGRESS`, or when stderr is not a terminal; `NO_COLOR` turns colour off.

use std::io::Write;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::engine::BuildProgress;
use crate::error::Report;

#[derive(Clone)]
pub struct Ui {
    quiet: bool,
    bars: bool,
    color: bool,
    multi: MultiProgress,
}

impl Ui {
    pub fn new(quiet: bool) -> Ui {
        let tty = crate::terminal::stderr_is_tty();
        let bars = tty && !quiet && crate::env::var_os(crate::env::SBX_NO_PROGRESS).is_none();
        let color = tty && crate::env::non_empty(crate::env::NO_COLOR).is_none();
        let multi = MultiProgress::with_draw_target(if bars {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        Ui {
            quiet,
            bars,
            color,
            multi,
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// Every message passes [`crate::text::printable_lines`]: messages quote values from
    /// files, logs and errors that a repository or the agent chose.
    fn emit(&self, line: String) {
        if self.bars {
            let _ = self.multi.println(&line);
        } else {
            let _ = writeln!(std::io::stderr(), "{line}");
        }
    }

    /// Progress a user may want to see; hidden with `--quiet`.
    pub fn info(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            self.emit(format!(
                "{} {}",
                self.paint("1;36", "sbx:"),
                safe(msg.as_ref())
            ));
        }
    }

    /// Something the user should act on; always shown.
    pub fn warn(&self, msg: impl AsRef<str>) {
        self.emit(format!(
            "{} {}",
            self.paint("1;33", "warning:"),
            safe(msg.as_ref())
        ));
    }

    /// A fact the user must not miss (where kept work is); always shown.
    pub fn notice(&self, msg: impl AsRef<str>) {
        self.emit(format!(
            "{} {}",
            self.paint("1;36", "sbx:"),
            safe(msg.as_ref())
        ));
    }

    /// A failure: always shown.
    pub fn error(&self, report: &Report) {
        self.emit(self.render_error(report));
    }

    /// `error:` and the message, the `Caused by:` lines, then a `hint:` line for each hint.
    fn render_error(&self, report: &Report) -> String {
        let mut out = format!("{} {}", self.paint("1;31", "error:"), safe(&report.message));
        if !report.causes.is_empty() {
            out.push_str("\n\nCaused by:");
            for c in &report.causes {
                out.push_str(&format!("\n    {}", safe(c)));
            }
        }
        for (i, h) in report.hints.iter().enumerate() {
            let gap = if i == 0 { "\n\n" } else { "\n" };
            out.push_str(&format!("{gap}{} {}", self.paint("1;32", "hint:"), safe(h)));
        }
        out
    }

    /// A bar for one long task (a build, a VM phase).
    pub fn bar(&self, label: &str) -> Bar {
        let pb = self.bars.then(|| {
            let pb = self.multi.add(ProgressBar::new(1));
            let style = ProgressStyle::with_template(
                "{spinner:.cyan} {prefix:<18} [{bar:24.cyan/blue}] {pos:>2}/{len:2} {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            pb.set_style(style);
            pb.set_prefix(label.to_owned());
            pb.enable_steady_tick(Duration::from_millis(120));
            pb
        });
        Bar {
            pb,
            label: label.to_owned(),
            ui: self.clone(),
        }
    }

    /// Removes every bar from the screen (before an interactive session takes the terminal).
    pub fn clear(&self) {
        let _ = self.multi.clear();
    }

    /// Hands the terminal over (before a command's output) or takes it back (after): bars
    /// cleared, and the cursor at the start of an empty line. A line printed with bars on ends
    /// padded to the terminal's width instead of with a newline, which a command that starts
    /// with a carriage return would overwrite; a command may end with a partial line.
    pub fn fresh_line(&self) {
        self.clear();
        if !crate::terminal::stderr_is_tty() {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = match crate::terminal::stderr_width() {
            Some(cols) => err.write_all(crate::terminal::fresh_line_sequence(cols).as_bytes()),
            None => err.write_all(b"\r\n"),
        };
        let _ = err.flush();
    }
}

pub struct Bar {
    pb: Option<ProgressBar>,
    label: String,
    ui: Ui,
}

impl Bar {
    /// Moves to phase `n` of `total`.
    pub fn phase(&self, n: u64, total: u64, what: &str) {
        match &self.pb {
            Some(pb) => {
                pb.set_length(total);
                pb.set_position(n.saturating_sub(1));
                pb.set_message(what.to_owned());
            }
            None => self.ui.info(format!("{}: {n}/{total} {what}", self.label)),
        }
    }

    pub fn finish(&self, msg: &str) {
        match &self.pb {
            Some(pb) => {
                pb.set_position(pb.length().unwrap_or(1));
                pb.finish_and_clear();
                self.ui.info(format!("{}: {msg}", self.label));
            }
            None => self.ui.info(format!("{}: {msg}", self.label)),
        }
    }

    pub fn abandon(&self) {
        if let Some(pb) = &self.pb {
            pb.finish_and_clear();
        }
    }
}

/// A message as it may reach the terminal: see [`Ui::emit`].
fn safe(msg: &str) -> String {
    crate::text::printable_lines(msg)
}

impl BuildProgress for Bar {
    fn step(&self, step: u64, total: u64, text: &str) {
        let short: String = text.chars().take(70).collect();
        self.phase(step, total, &short);
    }

    fn line(&self, _text: &str) {
        if let Some(pb) = &self.pb {
            pb.tick();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> Ui {
        Ui {
            quiet: false,
            bars: false,
            color: false,
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
        }
    }

    #[test]
    fn an_error_shows_its_causes_then_every_hint_of_the_chain() {
        // An engine behind SSH that does not answer: both layers say what to do.
        let ssh = crate::ssh::SshError::Connect {
            addr: "10.0.0.2:22".into(),
            source: Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        };
        let engine = crate::engine::EngineError::Unavailable {
            endpoint: "ssh://vm".into(),
            source: Box::new(ssh),
        };
        let e = anyhow::Error::from(engine).context("cannot start the session");
        assert_eq!(
            plain().render_error(&crate::hints::report(&e)),
            "error: cannot start the session\n\
             \n\
             Caused by:\n    \
             no container engine answers at `ssh://vm`\n    \
             cannot connect over SSH to `10.0.0.2:22`\n    \
             connection refused\n\
             \n\
             hint: start Docker (on Linux `sudo systemctl start docker`, on macOS `colima start`), \
             or point sbx at an engine with `--docker-host` or `DOCKER_HOST`\n\
             hint: check that the VM or host is up and its SSH port answers"
        );
        assert_eq!(
            plain().render_error(&Report::message("no hint")),
            "error: no hint"
        );
    }
}
