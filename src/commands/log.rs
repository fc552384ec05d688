//! `sbx log SESSION`: the full egress record of a session (running, kept or finished): every DNS
//! question and its fate, every refused connection.

use clap::Args;
use serde::Serialize;

use crate::audit::{Audit, Summary};
use crate::context::Context;
use crate::exit::ExitStatus;
use crate::session;
use crate::state::{self, Record};

#[derive(Debug, Args)]
pub struct LogArgs {
    /// The session id (or a unique prefix).
    pub session: String,
    /// Machine-readable output on stdout (with `--replay`: the terminal record, as
    /// asciicast v2 for `asciinema play -` or a web player).
    #[arg(long)]
    pub json: bool,
    /// Play the record of what the command printed, with its timing, in this terminal.
    #[arg(long)]
    pub replay: bool,
    /// How fast to replay (2 = twice as fast); pauses longer than 2 s are cut short.
    #[arg(
        long,
        default_value_t = 1.0,
        value_name = "FACTOR",
        requires = "replay"
    )]
    pub speed: f64,
}

#[derive(Serialize)]
struct Log<'a> {
    session: &'a str,
    command: &'a [String],
    allow: &'a [String],
    audit: Audit,
    summary: Summary,
}

pub async fn run(ctx: &Context, args: LogArgs) -> anyhow::Result<ExitStatus> {
    if args.replay {
        replay(ctx, &args.session, args.json, args.speed).await
    } else {
        show(ctx, &args.session, args.json)
    }
}

fn show(ctx: &Context, id: &str, json: bool) -> anyhow::Result<ExitStatus> {
    let (dir, record) = find(ctx, id)?;
    let audit = session::record_audit(&dir, &record);
    let summary = audit.summary();
    if json {
        let log = Log {
            session: &record.id,
            command: &record.command,
            allow: &record.allow,
            audit,
            summary,
        };
        println!("{}", serde_json::to_string_pretty(&log)?);
        return Ok(ExitStatus::Success);
    }
    println!(
        "session {}  ({})",
        record.id,
        crate::text::printable(&record.command.join(" "))
    );
    let (queries, refused) = audit.agents();
    println!("\nDNS questions ({}):", queries.len());
    for q in queries {
        println!("  {}", query_line(q));
    }
    println!("\nrefused connections ({}):", refused.len());
    for r in refused {
        println!("  {}", refusal_line(r));
    }
    let own: Vec<String> = audit
        .queries
        .iter()
        .filter(|q| q.selfcheck)
        .map(query_line)
        .chain(
            audit
                .refused
                .iter()
                .filter(|r| r.selfcheck)
                .map(refusal_line),
        )
        .collect();
    if !own.is_empty() {
        println!(
            "\nsbx's own start-up self-check (before the command; denied and refused as it must be):"
        );
        for l in own {
            println!("  {l}");
        }
    }
    if let Some(lines) = summary.allow_lines() {
        println!(
            "\nto allow the denied names, add to `.sbx.yaml` (then approve it with `sbx trust`):\n{lines}"
        );
    }
    Ok(ExitStatus::Success)
}

/// `sbx log SESSION --replay`: plays the session's terminal record (or prints it as asciicast
/// v2 with `--json`).
async fn replay(ctx: &Context, id: &str, json: bool, speed: f64) -> anyhow::Result<ExitStatus> {
    if !(speed.is_finite() && speed > 0.0) {
        return Err(crate::error::hinted(
            format!("`--speed {speed}` is not a speed"),
            "give a positive number: 1 is as recorded, 2 twice as fast",
        ));
    }
    let (dir, record) = find(ctx, id)?;
    let path = crate::cast::path(&dir);
    let (size, events) = match crate::cast::read(&path) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(crate::error::hinted(
                format!("session `{}` has no terminal record", record.id),
                "sessions are recorded unless `record: false`; `sbx exec` and sessions older than this sbx are not",
            ));
        }
        Err(e) => anyhow::bail!("cannot read `{}`: {e}", path.display()),
    };
    if json {
        // Written anew from what was read: valid asciicast v2 whatever the file holds.
        let mut out = std::io::stdout().lock();
        let header = serde_json::json!({
            "version": 2, "width": size.1, "height": size.0,
            "title": format!("sbx session {}", record.id),
        });
        let mut text = format!("{header}\n");
        for e in &events {
            text.push_str(&serde_json::json!([e.time, "o", e.data]).to_string());
            text.push('\n');
        }
        use std::io::Write;
        return match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
            _ => Ok(ExitStatus::Success),
        };
    }
    ctx.ui.info(format!(
        "replaying session `{}` ({}x{} when recorded); Ctrl-C stops",
        record.id, size.1, size.0
    ));
    ctx.ui.fresh_line();
    crate::cast::replay(&events, speed, 2.0).await?;
    ctx.ui.fresh_line();
    ctx.ui.info("end of the record");
    Ok(ExitStatus::Success)
}

/// A session's folder and record, by id (or a unique prefix of one).
pub fn find(ctx: &Context, id: &str) -> anyhow::Result<(std::path::PathBuf, Record)> {
    let all = state::list(&ctx.dirs.sessions());
    let mut matches = all.into_iter().filter(|(_, r)| r.id.starts_with(id));
    match (matches.next(), matches.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => {
            // A folder whose record does not read is worth saying so, not "no session".
            let dir = ctx.dirs.session(id);
            if crate::state::valid_id(id) && dir.is_dir() {
                let why = Record::load(&dir)
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                return Err(crate::error::hinted(
                    format!("the record of session `{id}` cannot be read: {why}"),
                    format!("look at `{}`", Record::path(&dir).display()),
                ));
            }
            Err(crate::error::hinted(
                format!("no session `{id}`"),
                "`sbx ls --all` lists the sessions sbx remembers",
            ))
        }
        _ => Err(crate::error::hinted(
            format!("`{id}` matches several sessions"),
            "give more of the session id (`sbx ls --all`)",
        )),
    }
}

// Every field comes from logs of what the agent did: shown escaped.
fn query_line(q: &crate::audit::Query) -> String {
    let p = crate::text::printable;
    format!(
        "{}  {:<5} {:<40} {}{}",
        p(&q.time),
        p(&q.qtype),
        p(&q.name),
        p(&q.outcome),
        if q.answers.is_empty() {
            String::new()
        } else {
            format!(" -> {}", p(&q.answers.join(", ")))
        }
    )
}

fn refusal_line(r: &crate::audit::Refusal) -> String {
    let p = crate::text::printable;
    let port = r.port.map(|p| format!(":{p}")).unwrap_or_default();
    format!(
        "{}  {} {}{port}",
        p(&r.time),
        p(&r.protocol),
        p(&r.destination)
    )
}
