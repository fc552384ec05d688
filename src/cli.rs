//! The command line: clap definitions, and the dispatch that turns a parsed command into calls on
//! the library and an exit code. Errors become `error:` / `Caused by:` / `hint:` on stderr.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::commands;
use crate::context::Context;
use crate::paths::Dirs;
use crate::progress::Ui;

/// sbx's own failures (as opposed to the command's exit code).
pub const EXIT_FAILURE: i32 = 125;

#[derive(Debug, Parser)]
#[command(
    name = "sbx",
    version,
    about = "Run an AI coding agent (or any command) in a throwaway, locked-down sandbox",
    long_about = "Each `sbx run` gives the command its own checkout of your repositories, an \
                  ephemeral hardened container and an egress firewall that only lets it reach \
                  allowlisted hosts. When it exits, the sandbox is removed; commits come back as a \
                  branch `sbx/<session>`, uncommitted work is kept."
)]
pub struct Cli {
    /// Print only warnings and errors (no progress).
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// The container engine to use (`unix:///path`, `tcp://host:port`), instead of
    /// `DOCKER_HOST`, the docker context, or the default socket.
    #[arg(long, global = true, value_name = "URL")]
    pub docker_host: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a sandbox session and run the agent (default `claude`) or `-- CMD ARGS...` in it.
    Run(RunArgs),
    /// Check the engine and build the images (a no-op when they are up to date).
    Setup(SetupArgs),
    /// Run a second command (default: a login shell) in a running session, under exactly the
    /// agent's restrictions: same container, firewall, user and environment, tokens included.
    Exec(ExecArgs),
    /// List sessions: running ones and ones whose work was kept.
    Ls(LsArgs),
    /// Clean up after sessions that died: containers, networks, clean checkouts (never dirty
    /// ones; their commits are imported first); and images sbx built that nothing needs.
    Gc(GcArgs),
    /// Check the environment and say what is missing.
    Doctor(DoctorArgs),
    /// Approve the project file (`.sbx.yaml`) for its current content, so sbx obeys the settings
    /// in it that widen the sandbox; a changed file is asked about again.
    Trust(TrustArgs),
    /// Show the resolved settings and where each came from.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Show a session's egress record: DNS questions and refused connections.
    Log {
        /// The session id (or a unique prefix).
        session: String,
        /// Machine-readable output on stdout (with `--replay`: the terminal record, as
        /// asciicast v2 for `asciinema play -` or a web player).
        #[arg(long)]
        json: bool,
        /// Play the record of what the command printed, with its timing, in this terminal.
        #[arg(long)]
        replay: bool,
        /// How fast to replay (2 = twice as fast); pauses longer than 2 s are cut short.
        #[arg(
            long,
            default_value_t = 1.0,
            value_name = "FACTOR",
            requires = "replay"
        )]
        speed: f64,
    },
    /// Allow more destinations in a running session, without restarting it.
    Allow {
        /// Host name, `*.domain`, IP or CIDR, with optional `:PORT`.
        #[arg(required = true, value_name = "ENTRY")]
        entries: Vec<String>,
        /// The running session (id or unique prefix).
        #[arg(long, value_name = "ID")]
        session: String,
    },
    /// Measure sbx: warm sessions, phases, first output, setup, concurrency, sizes, memory.
    #[command(hide = true)]
    Bench(BenchArgs),
    /// sbx's own background helper, started after a session: makes the gate the next session
    /// claims (`spare`). Not for people.
    #[command(name = "__spare", hide = true)]
    Spare {
        /// The spare's key, as JSON.
        key: String,
        /// A finished session's containers, removed first.
        remove: Vec<String>,
    },
    /// Sign Claude Code in: `claude setup-token` in a sandbox that reaches only the sign-in's
    /// hosts; the long-lived token it shows is kept in the keychain as `claude`, and every
    /// later session is signed in with it.
    Login,
    /// List or remove the package caches sessions keep per project (npm, pip, uv, cargo, Go).
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Print shell completions, generated from this command line: `sbx completions bash >
    /// ~/.local/share/bash-completion/completions/sbx` (zsh: into a folder on `$fpath` as
    /// `_sbx`; fish: `~/.config/fish/completions/sbx.fish`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), generated from this command line: `sbx man >
    /// ~/.local/share/man/man1/sbx.1`; `--dir` writes one page per command there as well.
    Man {
        /// Write `sbx.1` and a page per command (`sbx-run.1`, ...) into this folder instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Store tokens in the OS keychain; sessions get them as environment variables.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

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
pub struct RunArgs {
    /// A repository to put in the sandbox (repeatable; default: the one containing the current
    /// folder). Each is at `/workspace/<folder name>`.
    #[arg(long = "repo", value_name = "PATH")]
    pub repos: Vec<PathBuf>,
    /// Also allow this destination: a host name, `*.domain`, an IP or a CIDR, with optional
    /// `:PORT` (repeatable).
    #[arg(long = "allow", value_name = "ENTRY")]
    pub allow: Vec<String>,
    /// Attach the session to this existing Docker network instead of its own.
    #[arg(long, value_name = "NAME")]
    pub network: Option<String>,
    /// Keep every checkout at the end, clean or not.
    #[arg(long)]
    pub keep: bool,
    /// Run in a fresh VM cloned from the golden one (`sbx setup --vm` makes it): kernel
    /// isolation between the agent and this machine.
    #[arg(long)]
    pub vm: bool,
    /// Print where the session's time went (to stderr).
    #[arg(long)]
    pub timings: bool,
    /// The command and its arguments (after `--`).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `mise trust`'s verb (`allow` is taken by egress) and direnv's `revoke`; `--untrust` is
/// mise's spelling of the same.
#[derive(Debug, Args)]
pub struct TrustArgs {
    /// The project file, or the folder that holds it (default: the current repository's
    /// `.sbx.yaml`).
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,
    /// Withdraw the approval instead: sbx asks again before obeying the file.
    #[arg(long, visible_alias = "untrust")]
    pub revoke: bool,
}

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Prepare the golden VM for `sbx run --vm` (a fast no-op when it is up to date).
    #[arg(long)]
    pub vm: bool,
    /// Rebuild the sandbox image with the newest Claude Code (its self-updater is off inside).
    #[arg(long)]
    pub update: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Runs per measurement.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// The figures as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Measure VM sessions (`sbx run --vm`) instead: their phases, from the clone of the golden
    /// VM to its deletion (after `sbx setup --vm`).
    #[arg(long)]
    pub vm: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The running session (id or a unique prefix); not needed when only one runs.
    pub session: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
    /// Include finished sessions that kept nothing.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Also remove the images sbx built that no container uses and the current settings do not
    /// need, however recently they were used (by default those are kept for 14 days: another
    /// project or user of the engine may need them). Sessions rebuild what they need.
    #[arg(long)]
    pub images: bool,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Run the thorough egress leak check in a throwaway session (one row per channel; exit
    /// code 1 on any leak).
    #[arg(long)]
    pub leaks: bool,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List the projects with package caches, and which caches each has.
    Ls {
        /// Machine-readable output on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Remove the current repository's package caches (`--all`: every project's).
    Rm {
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print every setting, its value and its source.
    Show {
        /// Machine-readable output on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a parsed command line and returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    let ui = Ui::new(cli.quiet);
    let dirs = match Dirs::from_env() {
        Ok(d) => d,
        Err(e) => {
            ui.error(&e.to_string(), &[], None);
            return EXIT_FAILURE;
        }
    };
    let ctx = Context { dirs, ui };
    let result = match cli.command {
        Command::Run(args) => commands::run::run(&ctx, args, cli.docker_host).await,
        Command::Setup(args) => commands::setup::run(&ctx, args, cli.docker_host).await,
        Command::Ls(args) => commands::ls::run(&ctx, args, cli.docker_host).await,
        Command::Exec(args) => commands::exec::run(&ctx, args).await,
        Command::Gc(args) => commands::gc::run(&ctx, args, cli.docker_host).await,
        Command::Doctor(args) => commands::doctor::run(&ctx, args, cli.docker_host).await,
        Command::Config {
            command: ConfigCommand::Show { json },
        } => commands::config::show(&ctx, json, cli.docker_host),
        Command::Token { command } => commands::token::run(&ctx, command),
        Command::Login => commands::login::run(&ctx, cli.docker_host).await,
        Command::Cache { command } => commands::cache::run(&ctx, command, cli.docker_host).await,
        Command::Completions { shell } => commands::docs::completions(shell),
        Command::Man { dir } => commands::docs::man(dir.as_deref()),
        Command::Trust(args) => commands::trust::run(&ctx, args),
        Command::Bench(args) => commands::bench::run(&ctx, args).await,
        Command::Spare { key, remove } => commands::spare(&ctx, &key, &remove).await,
        Command::Log {
            session,
            json,
            replay: false,
            ..
        } => commands::log::run(&ctx, &session, json),
        Command::Log {
            session,
            json,
            speed,
            ..
        } => commands::log::replay(&ctx, &session, json, speed).await,
        Command::Allow { entries, session } => commands::allow::run(&ctx, &entries, &session).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            report_error(&ctx.ui, &e);
            EXIT_FAILURE
        }
    }
}

/// Prints an error chain with the most specific hint any layer of it offers.
pub fn report_error(ui: &Ui, e: &anyhow::Error) {
    let mut causes: Vec<String> = e.chain().skip(1).map(ToString::to_string).collect();
    causes.dedup();
    let hint = e.chain().find_map(crate::error::hint_for);
    ui.error(&e.to_string(), &causes, hint.as_deref());
}
