//! Lychee Rerank: ranks a photo library by how well each photo matches a description,
//! with the Lychee-rerank-mm model running locally.

pub mod library;
pub mod model;
