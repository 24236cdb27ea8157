//! Lychee Rerank: ranks a photo library by how well each photo matches a description,
//! with the Lychee-rerank-mm model running locally.

pub mod cli;
pub mod hub;
pub mod library;
pub mod model;
pub mod worker;
