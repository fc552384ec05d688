//! The session's terminal record: what the command printed, with timing, as an asciicast v2 file
//! in the session folder (`asciinema play` and web players read it), bounded in size with a
//! visible marker where it was cut, private to the user. Replayed by `sbx log --replay`.
//!
//! What the agent printed is the agent's: a replay shows it as the session did, escape sequences
//! included, and a record may hold any secret the agent printed.

use std::fs::File;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The record's file name in the session folder.
pub const FILE: &str = "terminal.cast";
/// The most output a record keeps.
pub const LIMIT: u64 = 64 << 20;
/// What a cut record ends with, for people and players alike.
pub const CUT_NOTE: &str = "[sbx: the record stops here; it reached its size limit]";

pub fn path(session_dir: &Path) -> PathBuf {
    session_dir.join(FILE)
}

/// Writes a record as output arrives.
pub struct Recorder {
    out: BufWriter<File>,
    start: Instant,
    written: u64,
    limit: u64,
    cut: bool,
    /// An incomplete UTF-8 sequence at the end of the last chunk.
    pending: Vec<u8>,
}

impl Recorder {
    /// Creates the record (a new file, mode 0600, never through a link) with its header.
    pub fn create(path: &Path, (rows, cols): (u16, u16), title: &str) -> std::io::Result<Recorder> {
        Self::with_limit(path, (rows, cols), title, LIMIT)
    }

    fn with_limit(
        path: &Path,
        (rows, cols): (u16, u16),
        title: &str,
        limit: u64,
    ) -> std::io::Result<Recorder> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        let mut out = BufWriter::new(file);
        let header = json!({
            "version": 2,
            "width": cols,
            "height": rows,
            "timestamp": crate::state::now(),
            "title": title,
            "env": {"TERM": crate::terminal::term()},
        });
        writeln!(out, "{header}")?;
        Ok(Recorder {
            out,
            start: Instant::now(),
            written: 0,
            limit,
            cut: false,
            pending: Vec::new(),
        })
    }

    /// Records a chunk of output; past the limit, records the cut once and then nothing.
    pub fn output(&mut self, bytes: &[u8]) {
        if self.cut {
            return;
        }
        self.pending.extend_from_slice(bytes);
        let text = take_utf8(&mut self.pending);
        if text.is_empty() {
            return;
        }
        if self.written + text.len() as u64 > self.limit {
            self.cut = true;
            let note = format!("\r\n{CUT_NOTE}\r\n");
            self.event("o", &note);
            return;
        }
        self.written += text.len() as u64;
        self.event("o", &text);
    }

    fn event(&mut self, kind: &str, data: &str) {
        let t = self.start.elapsed().as_secs_f64();
        let line = json!([(t * 1e6).round() / 1e6, kind, data]);
        let _ = writeln!(self.out, "{line}");
    }

    pub fn finish(mut self) {
        let rest = String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned();
        if !rest.is_empty() && !self.cut {
            self.event("o", &rest);
        }
        let _ = self.out.flush();
    }
}

/// The longest valid UTF-8 text at the front of `buf` (invalid bytes become U+FFFD), leaving an
/// incomplete sequence at its end for the next chunk.
fn take_utf8(buf: &mut Vec<u8>) -> String {
    let mut text = String::new();
    let mut rest: &[u8] = buf;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                text.push_str(s);
                rest = &[];
                break;
            }
            Err(e) => {
                let (good, after) = rest.split_at(e.valid_up_to());
                text.push_str(std::str::from_utf8(good).unwrap_or_default());
                match e.error_len() {
                    Some(n) => {
                        text.push('\u{fffd}');
                        rest = &after[n..];
                    }
                    None => {
                        rest = after;
                        break;
                    }
                }
            }
        }
    }
    let keep = rest.to_vec();
    *buf = keep;
    text
}

/// One output event of a record: when (seconds from the start) and what.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub time: f64,
    pub data: String,
}

/// Reads a record's size (`(rows, cols)`) and output events; lines that are not events of the
/// format are skipped (the file is in the session folder, which a VM shares).
pub fn read(path: &Path) -> std::io::Result<((u16, u16), Vec<Event>)> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("the record is not a regular file"));
    }
    use std::io::Read;
    let mut lines = std::io::BufReader::new(file.take(2 * LIMIT)).lines();
    let header: Value = match lines.next() {
        Some(l) => serde_json::from_str(&l?).map_err(std::io::Error::other)?,
        None => return Err(std::io::Error::other("the record is empty")),
    };
    let dim = |k: &str, d: u16| {
        header[k]
            .as_u64()
            .and_then(|v| u16::try_from(v).ok())
            .filter(|v| *v > 0)
            .unwrap_or(d)
    };
    let size = (dim("height", 24), dim("width", 80));
    let mut events = Vec::new();
    for line in lines {
        let Ok(v) = serde_json::from_str::<Value>(&line?) else {
            continue;
        };
        if let (Some(t), Some("o"), Some(d)) = (v[0].as_f64(), v[1].as_str(), v[2].as_str())
            && t.is_finite()
            && t >= 0.0
        {
            events.push(Event {
                time: t,
                data: d.to_owned(),
            });
        }
    }
    Ok((size, events))
}

/// When each event is shown in a replay at `speed`, with pauses longer than `max_idle` cut to
/// it: seconds from the replay's start, never going back.
pub fn schedule(events: &[Event], speed: f64, max_idle: f64) -> Vec<f64> {
    let speed = if speed.is_finite() && speed > 0.0 {
        speed
    } else {
        1.0
    };
    let mut out = Vec::with_capacity(events.len());
    let (mut last, mut at) = (0.0_f64, 0.0_f64);
    for e in events {
        let gap = (e.time - last).clamp(0.0, max_idle);
        last = last.max(e.time);
        at += gap / speed;
        out.push(at);
    }
    out
}

/// Plays a record on stdout at `speed`.
pub async fn replay(events: &[Event], speed: f64, max_idle: f64) -> std::io::Result<()> {
    let start = tokio::time::Instant::now();
    let when = schedule(events, speed, max_idle);
    for (e, at) in events.iter().zip(when) {
        tokio::time::sleep_until(start + Duration::from_secs_f64(at)).await;
        let mut out = std::io::stdout().lock();
        out.write_all(e.data.as_bytes())?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_asciicast_v2_private_and_split_characters_survive() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        let mut r = Recorder::create(&p, (30, 100), "sbx session abc").unwrap();
        r.output(b"hello \xe2\x9c");
        r.output(b"\x94 done\r\n\xff");
        r.finish();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let text = std::fs::read_to_string(&p).unwrap();
        let header: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(header["version"], 2);
        assert_eq!(
            (header["width"].as_u64(), header["height"].as_u64()),
            (Some(100), Some(30))
        );
        let (size, events) = read(&p).unwrap();
        assert_eq!(size, (30, 100));
        let all: String = events.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(all, "hello \u{2714} done\r\n\u{fffd}");
        // Never written through a link, never over an existing record.
        assert!(Recorder::create(&p, (1, 1), "x").is_err());
    }

    #[test]
    fn a_record_past_its_limit_is_cut_with_a_marker() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        let mut r = Recorder::with_limit(&p, (24, 80), "t", 10).unwrap();
        r.output(b"12345");
        r.output(b"67890abc");
        r.output(b"more");
        r.finish();
        let (_, events) = read(&p).unwrap();
        let all: String = events.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(all, format!("12345\r\n{CUT_NOTE}\r\n"));
    }

    #[test]
    fn replays_follow_the_speed_and_cut_long_pauses() {
        let ev = |t: f64| Event {
            time: t,
            data: String::new(),
        };
        let events = [ev(0.5), ev(1.0), ev(31.0), ev(30.0)];
        assert_eq!(schedule(&events, 1.0, 2.0), vec![0.5, 1.0, 3.0, 3.0]);
        assert_eq!(schedule(&events, 2.0, 2.0), vec![0.25, 0.5, 1.5, 1.5]);
        assert_eq!(schedule(&events, 0.0, 100.0), vec![0.5, 1.0, 31.0, 31.0]);
    }
}
