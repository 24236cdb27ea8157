// On Windows the window opens without a console; the command line attaches to the console
// it was started from (see `attach_parent_console`).
#![cfg_attr(
    all(target_os = "windows", feature = "gui"),
    windows_subsystem = "windows"
)]

use std::process::ExitCode;

use clap::Parser;
use lychee_rerank::cli::{self, Cli, Command};

fn main() -> ExitCode {
    attach_parent_console();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Rank(args)) => cli::rank::run(args),
        Some(Command::Index(args)) => cli::index::run_index(args),
        Some(Command::Search(args)) => cli::index::run_search(args),
        Some(Command::Bench(args)) => cli::bench::run(args),
        Some(Command::BenchIndex(args)) => cli::bench_index::run(args),
        Some(Command::Serve(args)) => cli::serve::run(args),
        Some(Command::Download(args)) => cli::download::run(args),
        #[cfg(feature = "gui")]
        None => lychee_rerank::app::run(cli.paths, cli.model, cli.embedder),
        #[cfg(not(feature = "gui"))]
        None => {
            use clap::CommandFactory;
            eprintln!("this build has no window; use a subcommand");
            let _ = Cli::command().print_help();
            ExitCode::FAILURE
        }
    }
}

/// A GUI-subsystem program on Windows has no console: attach to the one it was started
/// from, if any, so that `lychee-rerank rank ...` prints where the user typed it.
#[cfg(windows)]
fn attach_parent_console() {
    use windows_sys::Win32::System::Console::{ATTACH_PARENT_PROCESS, AttachConsole};
    // SAFETY: a plain Win32 call; failure (no parent console) is harmless.
    unsafe {
        AttachConsole(ATTACH_PARENT_PROCESS);
    }
}

#[cfg(not(windows))]
fn attach_parent_console() {}
