//! `sbx login`'s part that knows Claude Code: what its long-lived-token flow (`claude
//! setup-token`) needs to reach, and reading the token it shows from what the terminal received.

use std::num::NonZero;

use crate::keychain::Secret;

/// The hosts `claude setup-token` needs: the token exchange (`platform.claude.com/v1/oauth/
/// token`), the account's roles and profile (`api.anthropic.com`), the client metadata of a
/// Claude subscription sign-in (`claude.ai`). The browser part of the sign-in runs on the
/// user's machine, outside the sandbox.
pub const HOSTS: &[&str] = &["platform.claude.com", "api.anthropic.com", "claude.ai"];

/// The command, as Claude Code names it.
pub const COMMAND: &[&str] = &["claude", "setup-token"];

/// What every long-lived token Claude Code shows starts with (`sk-ant-oat01-...`).
const PREFIX: &str = "sk-ant-oat";
/// Real tokens are about 110 characters.
const LENGTHS: std::ops::RangeInclusive<usize> = 40..=512;
/// Rows of scrollback kept while reading the output.
const SCROLLBACK: usize = 10_000;

fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// The token `claude setup-token` showed, read from the bytes the terminal received, rendered
/// on a terminal of the same size (`(rows, cols)`): Claude Code breaks a token longer than a
/// row over several rows, which are joined again. The last token shown wins; `None` when none
/// is there (the sign-in failed or was cancelled).
pub fn token_from_output(bytes: &[u8], (rows, cols): (u16, u16)) -> Option<Secret> {
    let lines = rendered_lines(bytes, rows, cols);
    find_token(&lines).map(Secret::new)
}

/// Every row the terminal showed, oldest first: the ones scrolled off, then the screen.
fn rendered_lines(bytes: &[u8], rows: u16, cols: u16) -> Vec<String> {
    let nz = |n: u16| NonZero::new(n.max(1)).unwrap_or(NonZero::<u16>::MIN);
    let mut p = vt100::Parser::new(nz(rows), nz(cols), SCROLLBACK);
    p.process(bytes);
    let screen = p.screen_mut();
    screen.set_scrollback(usize::MAX);
    let back = screen.scrollback();
    let height = usize::from(rows.max(1));
    let mut lines = vec![String::new(); back + height];
    // Views from the oldest down to the live screen; a view `offset` rows back starts at
    // global row `back - offset`.
    let mut offset = back;
    loop {
        p.screen_mut().set_scrollback(offset);
        for (i, row) in p.screen().rows(0, cols.max(1)).enumerate() {
            if let Some(slot) = lines.get_mut(back - offset + i) {
                *slot = row.trim_end().to_owned();
            }
        }
        if offset == 0 {
            break;
        }
        offset = offset.saturating_sub(height);
    }
    lines
}

fn find_token(lines: &[String]) -> Option<String> {
    let (i, at) = lines
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, l)| l.find(PREFIX).map(|at| (i, at)))?;
    let rest = &lines[i][at..];
    let mut token: String = rest.chars().take_while(|c| token_char(*c)).collect();
    // A token that runs to the end of its row may go on in the rows below (rows of token
    // characters only; the line after it is prose).
    if token.len() == rest.len() {
        for next in &lines[i + 1..] {
            let next = next.trim();
            if next.is_empty() || !next.chars().all(token_char) {
                break;
            }
            token.push_str(next);
        }
    }
    (LENGTHS.contains(&token.len()) && token.chars().all(token_char)).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "sk-ant-oat01-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-AbCdEfGhIjKlMnOpQrStUvWx-AA";

    /// What Claude Code's success screen sends, its token broken at `width` columns.
    fn screen(width: usize) -> Vec<u8> {
        let mut out = String::from(
            "\x1b[?25l\x1b[32m\u{2714} Long-lived authentication token created\x1b[39m\r\n\r\n\
             Your OAuth token (valid for 1 year):\r\n\r\n\x1b[33m",
        );
        let chars: Vec<char> = TOKEN.chars().collect();
        let rows: Vec<String> = chars.chunks(width).map(|c| c.iter().collect()).collect();
        out.push_str(&rows.join("\r\n"));
        out.push_str(
            "\x1b[39m\r\n\r\n\x1b[2mStore this token securely. You won't be able to see it again.\x1b[22m\r\n\
             \r\n\x1b[2mUse this token by setting: export CLAUDE_CODE_OAUTH_TOKEN=<token>\x1b[22m\r\n\x1b[?25h",
        );
        out.into_bytes()
    }

    #[test]
    fn the_token_is_read_whole_on_a_wide_and_a_narrow_terminal() {
        let wide = token_from_output(&screen(200), (30, 200)).unwrap();
        assert_eq!(wide.expose(), TOKEN);
        let narrow = token_from_output(&screen(40), (24, 40)).unwrap();
        assert_eq!(narrow.expose(), TOKEN);
    }

    #[test]
    fn a_token_that_scrolled_off_the_screen_is_found() {
        let mut bytes = screen(40);
        bytes.extend(b"\r\nmore\r\n".repeat(30));
        assert_eq!(token_from_output(&bytes, (10, 40)).unwrap().expose(), TOKEN);
    }

    #[test]
    fn no_token_no_secret() {
        let failed = b"\x1b[31mOAuth error: Request failed with status code 400\x1b[39m\r\n";
        assert!(token_from_output(failed, (24, 80)).is_none());
        // The example line (`<token>`) is no token; nor is a prefix alone.
        assert!(
            token_from_output(
                b"export CLAUDE_CODE_OAUTH_TOKEN=sk-ant-oat01-\r\n",
                (24, 80)
            )
            .is_none()
        );
    }

    #[test]
    fn a_redrawn_frame_leaves_the_last_token() {
        // Ink erases the previous frame (cursor up, erase line) before drawing the next.
        let mut bytes = b"sk-ant-oat01-old-old-old-old-old-old-old-old-old-old\r\n".to_vec();
        bytes.extend(b"\x1b[1A\x1b[2K\x1b[G");
        bytes.extend(screen(80));
        assert_eq!(token_from_output(&bytes, (24, 80)).unwrap().expose(), TOKEN);
    }
}
