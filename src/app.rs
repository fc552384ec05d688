//! Runs a parsed command line: builds what every command gets, hands the command its arguments,
//! and turns the outcome into what sbx exits with. A failure is reported here, once: `error:`,
//! `Caused by:` and `hint:` lines on stderr.

use clap::CommandFactory;

use crate::cli::{Cli, Command};
use crate::commands;
use crate::context::Context;
use crate::error::Report;
use crate::exit::ExitStatus;
use crate::paths::Dirs;
use crate::progress::Ui;

/// Runs a parsed command line and returns what sbx exits with.
pub async fn run(cli: Cli) -> ExitStatus {
    let ui = Ui::new(cli.quiet);
    let dirs = match Dirs::from_env() {
        Ok(d) => d,
        Err(e) => {
            ui.error(&Report::message(e.to_string()));
            return ExitStatus::Failure;
        }
    };
    let ctx = Context { dirs, ui };
    let docker_host = cli.docker_host;
    let result = match cli.command {
        Command::Run(args) => commands::run::run(&ctx, args, docker_host).await,
        Command::Setup(args) => commands::setup::run(&ctx, args, docker_host).await,
        Command::Ls(args) => commands::ls::run(&ctx, args, docker_host).await,
        Command::Exec(args) => commands::exec::run(&ctx, args).await,
        Command::Gc(args) => commands::gc::run(&ctx, args, docker_host).await,
        Command::Doctor(args) => commands::doctor::run(&ctx, args, docker_host).await,
        Command::Config(args) => commands::config::run(&ctx, args, docker_host),
        Command::Token(args) => commands::token::run(&ctx, args),
        Command::Login => commands::login::run(&ctx, docker_host).await,
        Command::Cache(args) => commands::cache::run(&ctx, args, docker_host).await,
        Command::Completions(args) => commands::docs::completions(args, Cli::command()),
        Command::Man(args) => commands::docs::man(args, Cli::command()),
        Command::Trust(args) => commands::trust::run(&ctx, args),
        Command::Bench(args) => commands::bench::run(&ctx, args).await,
        Command::Spare(args) => commands::spare::run(&ctx, args).await,
        Command::Log(args) => commands::log::run(&ctx, args).await,
        Command::Allow(args) => commands::allow::run(&ctx, args).await,
    };
    match result {
        Ok(status) => status,
        Err(e) => {
            ctx.ui.error(&crate::hints::report(&e));
            ExitStatus::Failure
        }
    }
}
