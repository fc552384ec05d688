//! `sbx log SESSION`: the full egress record of a session (running, kept or finished): every DNS
//! question and its fate, every refused connection.

use serde::Serialize;

use crate::audit::{Audit, Summary};
use crate::session::{self, Context};
use crate::state::{self, Record};

#[derive(Serialize)]
struct Log<'a> {
    session: &'a str,
    command: &'a [String],
    allow: &'a [String],
    audit: Audit,
    summary: Summary,
}

pub fn run(ctx: &Context, id: &str, json: bool) -> anyhow::Result<i32> {
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
        return Ok(0);
    }
    // Every field below comes from logs of what the agent did: shown escaped.
    let p = |s: &str| crate::text::printable(s);
    println!("session {}  ({})", record.id, p(&record.command.join(" ")));
    println!("\nDNS questions ({}):", audit.queries.len());
    for q in &audit.queries {
        println!(
            "  {}  {:<5} {:<40} {}{}",
            p(&q.time),
            p(&q.qtype),
            p(&q.name),
            p(&q.outcome),
            if q.answers.is_empty() {
                String::new()
            } else {
                format!(" -> {}", p(&q.answers.join(", ")))
            }
        );
    }
    println!("\nrefused connections ({}):", audit.refused.len());
    for r in &audit.refused {
        let port = r.port.map(|p| format!(":{p}")).unwrap_or_default();
        println!(
            "  {}  {} {}{port}",
            p(&r.time),
            p(&r.protocol),
            p(&r.destination)
        );
    }
    if let Some(lines) = summary.allow_lines() {
        println!(
            "\nto allow the denied names, add to `.sbx.yaml` (then approve it with `sbx trust`):\n{lines}"
        );
    }
    Ok(0)
}

/// A session's folder and record, by id (or a unique prefix of one).
pub fn find(ctx: &Context, id: &str) -> anyhow::Result<(std::path::PathBuf, Record)> {
    let all = state::list(&ctx.dirs.sessions());
    let matches: Vec<_> = all
        .into_iter()
        .filter(|(_, r)| r.id.starts_with(id))
        .collect();
    match matches.len() {
        1 => Ok(matches.into_iter().next().expect("one match")),
        0 => Err(super::hinted(
            format!("no session `{id}`"),
            "`sbx ls --all` lists the sessions sbx remembers",
        )),
        _ => Err(super::hinted(
            format!("`{id}` matches several sessions"),
            "give more of the session id (`sbx ls --all`)",
        )),
    }
}
