use std::process::ExitCode;

use clap::Parser;
use lychee_rerank::cli::{self, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Rank(args)) => cli::rank::run(args),
        Some(Command::Bench(args)) => cli::bench::run(args),
        None => {
            use clap::CommandFactory;
            let _ = Cli::command().print_help();
            ExitCode::SUCCESS
        }
    }
}
