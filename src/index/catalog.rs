//! The photos of one library and their vectors, as the first stage searches them: row `i`
//! of the vector set is photo `i` when it is indexed. Built by [`super::run_indexing`],
//! searched by [`Catalog::search`].

use std::path::PathBuf;

use half::f16;

use super::search::VectorSet;

/// One photo's place in the first stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Index into the catalog's photos.
    pub photo: usize,
    /// Cosine of the normalized embeddings.
    pub similarity: f32,
}

/// The library as the index knows it.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub photos: Vec<PathBuf>,
    /// The embedder whose vectors these are.
    pub embedder: String,
    /// Row of each photo in `vectors`, once it is indexed.
    rows: Vec<Option<usize>>,
    /// For each row, its photo.
    photo_of_row: Vec<usize>,
    vectors: VectorSet,
}

impl Catalog {
    /// `photos`, none indexed yet.
    pub fn new(photos: Vec<PathBuf>, embedder: String, dim: usize) -> Self {
        Catalog {
            rows: vec![None; photos.len()],
            photos,
            embedder,
            photo_of_row: Vec::new(),
            vectors: VectorSet::new(dim),
        }
    }

    /// Gives photo `index` its vector.
    pub fn set(&mut self, index: usize, vector: &[f16]) {
        if index < self.rows.len()
            && self.rows[index].is_none()
            && vector.len() == self.vectors.dim()
        {
            self.rows[index] = Some(self.vectors.push(vector));
            self.photo_of_row.push(index);
        }
    }

    /// Gives photo `index` its vector, from f32.
    pub fn set_f32(&mut self, index: usize, vector: &[f32]) {
        let v: Vec<f16> = vector.iter().map(|&x| f16::from_f32(x)).collect();
        self.set(index, &v);
    }

    /// Photos with a vector.
    pub fn indexed(&self) -> usize {
        self.photo_of_row.len()
    }

    /// Whether photo `index` has a vector.
    pub fn is_indexed(&self, index: usize) -> bool {
        self.rows.get(index).is_some_and(Option::is_some)
    }

    /// Keeps the vectors on `device` too, so that searches run there (nothing on the CPU).
    pub fn upload(&mut self, device: &candle_core::Device) -> candle_core::Result<()> {
        self.vectors.upload(device)
    }

    /// The cosine of every indexed photo's vector with `query`, by row, on the CPU alone.
    pub fn cpu_similarities(&self, query: &[f32]) -> Vec<f32> {
        self.vectors.cpu_similarities(query)
    }

    /// Bytes the vectors take.
    pub fn vector_bytes(&self) -> usize {
        self.vectors.bytes()
    }

    /// Every indexed photo, most similar to `query` (L2-normalized) first; ties go to the
    /// photo added first.
    pub fn search(&self, query: &[f32]) -> Vec<Hit> {
        let scores = self.vectors.similarities(query);
        let mut hits: Vec<Hit> = scores
            .iter()
            .zip(&self.photo_of_row)
            .map(|(&similarity, &photo)| Hit { photo, similarity })
            .collect();
        hits.sort_by(|a, b| {
            b.similarity
                .total_cmp(&a.similarity)
                .then(a.photo.cmp(&b.photo))
        });
        hits
    }

    /// The `k` photos most similar to `query`, best first.
    pub fn top_k(&self, query: &[f32], k: usize) -> Vec<Hit> {
        self.vectors
            .top_k(query, k)
            .into_iter()
            .map(|(row, similarity)| Hit {
                photo: self.photo_of_row[row],
                similarity,
            })
            .collect()
    }
}
