//! The command line: the clap tree of `sbx` and its subcommands. Each subcommand's arguments
//! live with the command (`commands::run::RunArgs`, ...); running a parsed command line is
//! `app`'s.

use clap::{Parser, Subcommand};

use crate::commands::{
    allow::AllowArgs, bench::BenchArgs, cache::CacheArgs, config::ConfigArgs,
    docs::CompletionsArgs, docs::ManArgs, doctor::DoctorArgs, exec::ExecArgs, gc::GcArgs,
    log::LogArgs, ls::LsArgs, run::RunArgs, setup::SetupArgs, spare::SpareArgs, token::TokenArgs,
    trust::TrustArgs,
};

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
    Config(ConfigArgs),
    /// Show a session's egress record: DNS questions and refused connections.
    Log(LogArgs),
    /// Allow more destinations in a running session, without restarting it.
    Allow(AllowArgs),
    /// Measure sbx: warm sessions, phases, first output, setup, concurrency, sizes, memory.
    #[command(hide = true)]
    Bench(BenchArgs),
    /// sbx's own background helper, started after a session: makes the gate the next session
    /// claims (`spare`). Not for people.
    #[command(name = "__spare", hide = true)]
    Spare(SpareArgs),
    /// Sign Claude Code in: `claude setup-token` in a sandbox that reaches only the sign-in's
    /// hosts; the long-lived token it shows is kept in the keychain as `claude`, and every
    /// later session is signed in with it.
    Login,
    /// List or remove the package caches sessions keep per project (npm, pip, uv, cargo, Go).
    Cache(CacheArgs),
    /// Print shell completions, generated from this command line: `sbx completions bash >
    /// ~/.local/share/bash-completion/completions/sbx` (zsh: into a folder on `$fpath` as
    /// `_sbx`; fish: `~/.config/fish/completions/sbx.fish`).
    Completions(CompletionsArgs),
    /// Print the man page (roff), generated from this command line: `sbx man >
    /// ~/.local/share/man/man1/sbx.1`; `--dir` writes one page per command there as well.
    Man(ManArgs),
    /// Store tokens in the OS keychain; sessions get them as environment variables.
    Token(TokenArgs),
}
