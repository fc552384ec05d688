//! `sbx token set|get|rm|list`: tokens in the OS keychain. `set` reads the secret from a hidden
//! prompt on a terminal, from stdin otherwise; never from the command line.

use std::io::{BufRead, Write};

use clap::{Args, Subcommand};
use serde::Serialize;

use crate::config::Layer;
use crate::context::Context;
use crate::exit::ExitStatus;
use crate::keychain::{self, Secret, Tokens};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Store a token: typed at a hidden prompt, or one line piped on stdin (never an argument).
    /// Well-known names: `github` (GH_TOKEN), `claude` (CLAUDE_CODE_OAUTH_TOKEN, from
    /// `claude setup-token`), `anthropic` (ANTHROPIC_API_KEY).
    Set {
        name: String,
        /// The environment variable it becomes (required for names that are not well known).
        #[arg(long, value_name = "VAR")]
        env: Option<String>,
    },
    /// Print a token to stdout (for scripts).
    Get { name: String },
    /// Remove a token.
    Rm { name: String },
    /// List stored tokens: names, variables and store. Never values.
    List {
        /// Machine-readable output on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

fn open(ctx: &Context) -> anyhow::Result<Tokens> {
    let settings = super::load_settings(ctx, super::project_root().as_deref(), Layer::default())?;
    Ok(Tokens::open(settings.token_store, &ctx.dirs.config)?)
}

pub fn run(ctx: &Context, args: TokenArgs) -> anyhow::Result<ExitStatus> {
    match args.command {
        TokenCommand::Set { name, env } => {
            let env = keychain::env_for(&name, env.as_deref())?;
            let tokens = open(ctx)?;
            let secret = read_secret(&name)?;
            tokens.set(&name, &env, &secret)?;
            ctx.ui.info(format!(
                "stored `{name}` in the {}; sessions get it as `{env}`",
                tokens.store_name
            ));
            Ok(ExitStatus::Success)
        }
        TokenCommand::Get { name } => {
            let secret = open(ctx)?.get(&name)?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", secret.expose())?;
            Ok(ExitStatus::Success)
        }
        TokenCommand::Rm { name } => {
            let tokens = open(ctx)?;
            tokens.remove(&name)?;
            ctx.ui
                .info(format!("removed `{name}` from the {}", tokens.store_name));
            Ok(ExitStatus::Success)
        }
        TokenCommand::List { json } => list(ctx, json),
    }
}

#[derive(Serialize)]
struct Row {
    name: String,
    env: String,
    store: String,
}

fn list(ctx: &Context, json: bool) -> anyhow::Result<ExitStatus> {
    let tokens = open(ctx)?;
    let rows: Vec<Row> = tokens
        .index()?
        .into_iter()
        .map(|(name, e)| Row {
            name,
            env: e.env,
            store: e.store,
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitStatus::Success);
    }
    if rows.is_empty() {
        ctx.ui.info(format!(
            "no tokens stored (store: {}); add one with `sbx token set github`",
            tokens.store_name
        ));
        return Ok(ExitStatus::Success);
    }
    println!("{:<16} {:<26} STORE", "NAME", "ENV");
    for r in rows {
        println!("{:<16} {:<26} {}", r.name, r.env, r.store);
    }
    Ok(ExitStatus::Success)
}

/// The secret from a hidden prompt (terminal) or one line of stdin (pipe).
fn read_secret(name: &str) -> anyhow::Result<Secret> {
    let mut line = String::new();
    if crate::terminal::stdin_is_tty() {
        eprint!("token for `{name}` (input hidden): ");
        let _ = std::io::stderr().flush();
        let echo_off = crate::terminal::EchoOff::enter();
        std::io::stdin().lock().read_line(&mut line)?;
        drop(echo_off);
        eprintln!();
    } else {
        std::io::stdin().lock().read_line(&mut line)?;
        // More than one line on stdin is a mistake (a file with several secrets?).
        let mut rest = String::new();
        if std::io::stdin().lock().read_line(&mut rest)? > 0 && !rest.trim().is_empty() {
            return Err(keychain::KeychainError::Multiline.into());
        }
    }
    Ok(keychain::parse_input(&line)?)
}
