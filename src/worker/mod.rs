//! The inference side: rankings run here, away from the window's thread.

pub mod rank;
pub mod thread;
