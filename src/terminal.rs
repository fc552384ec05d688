//! The user's terminal: whether stdin/stdout/stderr are TTYs, their size, and raw mode for an
//! interactive session (restored on drop, also on the error path).

use std::io::IsTerminal;

pub fn stdin_is_tty() -> bool {
    std::io::stdin().is_terminal()
}

pub fn stdout_is_tty() -> bool {
    std::io::stdout().is_terminal()
}

pub fn stderr_is_tty() -> bool {
    std::io::stderr().is_terminal()
}

/// `(rows, cols)` of the terminal on stdout, when there is one.
pub fn size() -> Option<(u16, u16)> {
    let ws = rustix::termios::tcgetwinsize(std::io::stdout()).ok()?;
    (ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Columns of the terminal on stderr, when there is one.
pub fn stderr_width() -> Option<u16> {
    let ws = rustix::termios::tcgetwinsize(std::io::stderr()).ok()?;
    (ws.ws_col > 0).then_some(ws.ws_col)
}

/// What moves the cursor to the start of an empty line from wherever it is, on a terminal of
/// `cols` columns: autowrap on, then a full line of spaces (from column 0 it fills the line and
/// stays there; from further right, or after a line padded to the width, it wraps), then back
/// to column 0 and erase the line. Unlike a plain newline it adds no blank line when the cursor
/// is at the start of one already.
pub fn fresh_line_sequence(cols: u16) -> String {
    format!("\x1b[?7h{}\r\x1b[K", " ".repeat(usize::from(cols)))
}

/// The value for `TERM` inside: the user's, or a safe default.
pub fn term() -> String {
    crate::env::var(crate::env::TERM)
        .filter(|t| !t.is_empty() && t != "dumb")
        .unwrap_or_else(|| "xterm-256color".into())
}

/// Turns off echo on the terminal (for a hidden prompt) until dropped.
pub struct EchoOff {
    saved: Option<rustix::termios::Termios>,
}

impl EchoOff {
    pub fn enter() -> EchoOff {
        use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
        let saved = tcgetattr(std::io::stdin()).ok();
        if let Some(s) = &saved {
            let mut quiet = s.clone();
            quiet.local_modes.remove(LocalModes::ECHO);
            let _ = tcsetattr(std::io::stdin(), OptionalActions::Now, &quiet);
        }
        EchoOff { saved }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(s) = &self.saved {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                s,
            );
        }
    }
}

/// Puts stdin in raw mode until dropped, so keys (Ctrl-C included) go to the sandboxed program.
pub struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    pub fn enter() -> std::io::Result<RawMode> {
        use rustix::termios::{OptionalActions, tcgetattr, tcsetattr};
        let saved = tcgetattr(std::io::stdin())?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(std::io::stdin(), OptionalActions::Now, &raw)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}
