use std::process::ExitCode;

use clap::Parser;
use lychee_rerank::cli::{self, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Rank(args)) => cli::rank::run(args),
        Some(Command::Bench(args)) => cli::bench::run(args),
        Some(Command::Download(args)) => cli::download::run(args),
        #[cfg(feature = "gui")]
        None => lychee_rerank::app::run(cli.paths, cli.model),
        #[cfg(not(feature = "gui"))]
        None => {
            use clap::CommandFactory;
            eprintln!("this build has no window; use a subcommand");
            let _ = Cli::command().print_help();
            ExitCode::FAILURE
        }
    }
}
