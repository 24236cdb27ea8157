//! `lychee-rerank download`: gets a model into the Hugging Face cache, with a progress bar
//! on stderr. Resumes an interrupted download; does nothing when the model is complete.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use clap::Args;

use crate::hub::download::{DownloadEvent, HubConfig, Rate, download_model};
use crate::hub::{DEFAULT_MODEL_ID, ModelSource};

#[derive(Debug, Clone, Args)]
pub struct DownloadArgs {
    /// The Hugging Face model id (owner/name[@revision]).
    #[arg(default_value = DEFAULT_MODEL_ID)]
    pub model: String,
}

pub fn run(args: DownloadArgs) -> ExitCode {
    let (id, revision) = match ModelSource::parse(&args.model, None) {
        Ok(ModelSource::Hub { id, revision }) => (id, revision),
        Ok(ModelSource::Folder(p)) => {
            eprintln!(
                "{} is already a folder on this computer; nothing to download",
                p.display()
            );
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("lychee-rerank download: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = HubConfig::from_env();
    eprintln!(
        "getting {id}@{revision} from {} into {}",
        config.endpoint,
        config.cache.root().display()
    );
    let terminal = std::io::stderr().is_terminal();
    let rate = Rate::new(0);
    let mut total = 0u64;
    let result =
        download_model(
            &config,
            &id,
            &revision,
            &AtomicBool::new(false),
            |event| match event {
                DownloadEvent::Planned { total_bytes, files } => {
                    total = total_bytes;
                    eprintln!(
                        "{files} weight files, {:.1} GB in all",
                        total_bytes as f64 / 1e9
                    );
                }
                DownloadEvent::FileStarted { name, size } => {
                    if terminal {
                        eprintln!();
                    }
                    eprintln!("{name} ({:.1} MB)", size as f64 / 1e6);
                }
                DownloadEvent::Progress {
                    done_bytes,
                    total_bytes,
                } => {
                    let (speed, left) = rate.at(done_bytes, total_bytes.max(total));
                    let line = format!(
                        "{:.2} / {:.2} GB · {:.1} MB/s{}",
                        done_bytes as f64 / 1e9,
                        total_bytes.max(total) as f64 / 1e9,
                        speed / 1e6,
                        left.map(|s| format!(" · {:.0} s left", s))
                            .unwrap_or_default()
                    );
                    if terminal {
                        eprint!("\r\x1b[2K{line}");
                    }
                }
                DownloadEvent::FileDone { .. } => {}
            },
        );
    if terminal {
        eprintln!();
    }
    match result {
        Ok(dir) => {
            eprintln!("ready: {}", dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lychee-rerank download: {e}");
            ExitCode::FAILURE
        }
    }
}
