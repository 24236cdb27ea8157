//! The library index: every photo embedded once by the first-stage embedder
//! ([`crate::embed`]), kept on disk by content ([`store`]), searched by brute force in
//! milliseconds ([`search`]), so that the judge only looks at the best few hundred.

mod build;
pub mod catalog;
pub mod search;
pub mod store;

pub use build::{
    Flow, IndexError, IndexEvent, IndexSummary, batch_size, run_indexing, run_indexing_on,
};
pub use catalog::{Catalog, Hit};
pub use store::IndexStore;
