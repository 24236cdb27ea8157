//! Progress of a long command on stderr: one updating line on a terminal, a line per
//! photo otherwise (for logs and tests).

use std::io::IsTerminal;
use std::time::Instant;

/// Progress on stderr: one updating line on a terminal, a line per photo otherwise.
pub struct Progress {
    /// "ranked", "indexed".
    verb: &'static str,
    total: usize,
    done: usize,
    start: Instant,
    terminal: bool,
}

impl Progress {
    /// Progress over `total` photos, ending in "`verb` N photos in S s".
    pub fn new(total: usize, verb: &'static str) -> Self {
        Progress {
            verb,
            total,
            done: 0,
            start: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// One more photo done.
    pub fn step(&mut self, path: &std::path::Path) {
        self.done += 1;
        let secs = self.start.elapsed().as_secs_f64();
        let rate = self.done as f64 / secs.max(1e-9);
        let left = (self.total - self.done) as f64 / rate.max(1e-9);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let line = format!(
            "photo {} of {} · {rate:.1} photos/s · {left:.0} s left · {name}",
            self.done, self.total
        );
        if self.terminal {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
    }

    /// A line of its own, above the progress line.
    pub fn note(&self, text: &str) {
        if self.terminal {
            eprint!("\r\x1b[2K");
        }
        eprintln!("note: {text}");
    }

    /// The last line.
    pub fn finish(&self) {
        if self.terminal {
            eprintln!();
        }
        let secs = self.start.elapsed().as_secs_f64();
        eprintln!("{} {} photos in {secs:.1} s", self.verb, self.done);
    }
}
