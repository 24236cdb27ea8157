//! Brute-force search: every photo's vector against the query's, one matrix-vector product
//! over f16 rows converted to f32 a block at a time, split across the CPU's cores, then the
//! best K. With a GPU the rows are also kept there (in f32, uploaded once) and the product
//! runs on it. Up to about a million photos this takes well under a second on a laptop
//! CPU and needs no approximate index (docs/PERFORMANCE.md has the numbers).

use candle_core::{DType, Device, Tensor};
use half::f16;
use rayon::prelude::*;

/// Rows per block: converted to f32 together, a block fits in the first-level cache.
const BLOCK_ROWS: usize = 64;

/// The vectors of a set of photos, row `i` for photo `i`, L2-normalized, in f16.
#[derive(Debug, Clone, Default)]
pub struct VectorSet {
    dim: usize,
    data: Vec<f16>,
    /// The same rows on a GPU, when uploaded (and still complete).
    on_device: Option<(usize, Tensor)>,
}

impl VectorSet {
    /// An empty set of `dim`-wide vectors.
    pub fn new(dim: usize) -> Self {
        VectorSet {
            dim,
            data: Vec::new(),
            on_device: None,
        }
    }

    /// Values per vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    /// True when there is no vector.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Adds a vector (it must be `dim` wide); returns its row.
    pub fn push(&mut self, vector: &[f16]) -> usize {
        assert_eq!(vector.len(), self.dim, "vector width");
        self.data.extend_from_slice(vector);
        self.len() - 1
    }

    /// Adds an f32 vector.
    pub fn push_f32(&mut self, vector: &[f32]) -> usize {
        let v: Vec<f16> = vector.iter().map(|&x| f16::from_f32(x)).collect();
        self.push(&v)
    }

    /// Bytes the vectors take.
    pub fn bytes(&self) -> usize {
        self.data.len() * 2
    }

    /// Keeps a copy of the rows on `device` for [`VectorSet::similarities`] (nothing on the
    /// CPU). Rows added later are searched on the CPU until the next upload.
    pub fn upload(&mut self, device: &Device) -> candle_core::Result<()> {
        if device.is_cpu() || self.is_empty() {
            self.on_device = None;
            return Ok(());
        }
        if self
            .on_device
            .as_ref()
            .is_some_and(|(rows, _)| *rows == self.len())
        {
            return Ok(());
        }
        let rows = Tensor::from_slice(&self.data, (self.len(), self.dim), &Device::Cpu)?
            .to_device(device)?
            .to_dtype(DType::F32)?;
        self.on_device = Some((self.len(), rows));
        Ok(())
    }

    /// The cosine of every row with `query` (which must be L2-normalized).
    pub fn similarities(&self, query: &[f32]) -> Vec<f32> {
        assert_eq!(query.len(), self.dim, "query width");
        if let Some((rows, tensor)) = &self.on_device
            && *rows == self.len()
            && let Ok(scores) = device_similarities(tensor, query)
        {
            return scores;
        }
        self.cpu_similarities(query)
    }

    /// [`VectorSet::similarities`] on the CPU's cores.
    pub fn cpu_similarities(&self, query: &[f32]) -> Vec<f32> {
        assert_eq!(query.len(), self.dim, "query width");
        let dim = self.dim;
        let mut out = vec![0f32; self.len()];
        out.par_chunks_mut(BLOCK_ROWS)
            .zip(self.data.par_chunks(BLOCK_ROWS * dim.max(1)))
            .for_each(|(scores, rows)| {
                let mut block = vec![0f32; rows.len()];
                half::slice::HalfFloatSliceExt::convert_to_f32_slice(rows, &mut block);
                for (score, row) in scores.iter_mut().zip(block.chunks_exact(dim)) {
                    *score = dot(row, query);
                }
            });
        out
    }

    /// The `k` rows most similar to `query`, best first, with their cosine; ties go to the
    /// earlier row.
    pub fn top_k(&self, query: &[f32], k: usize) -> Vec<(usize, f32)> {
        let scores = self.similarities(query);
        top_k_of(&scores, k)
    }
}

/// One matrix-vector product on the device; the scores come back to the host.
fn device_similarities(rows: &Tensor, query: &[f32]) -> candle_core::Result<Vec<f32>> {
    let q = Tensor::from_slice(query, (query.len(), 1), rows.device())?;
    rows.matmul(&q)?.squeeze(1)?.to_vec1::<f32>()
}

/// The `k` best of `scores`, best first (ties: the lower index first).
pub fn top_k_of(scores: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut order: Vec<(usize, f32)> = scores.iter().copied().enumerate().collect();
    let better = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    let k = k.min(order.len());
    if k == 0 {
        return Vec::new();
    }
    if k < order.len() {
        order.select_nth_unstable_by(k - 1, better);
        order.truncate(k);
    }
    order.sort_by(better);
    order
}

/// A dot product the compiler vectorizes (eight independent sums).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (a8, a_rest) = a.split_at(a.len() / 8 * 8);
    let (b8, b_rest) = b.split_at(a8.len());
    for (x, y) in a8.chunks_exact(8).zip(b8.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in a_rest.iter().zip(b_rest) {
        sum += x * y;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn the_best_rows_come_first() {
        let mut set = VectorSet::new(3);
        for v in [
            [1.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.7, 0.7, 0.0],
            [0.0, 0.0, 1.0],
        ] {
            set.push_f32(&unit(&v));
        }
        let q = unit(&[1.0, 0.2, 0.0]);
        let top = set.top_k(&q, 2);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![0, 2]);
        assert!((top[0].1 - q[0]).abs() < 1e-3);
        assert_eq!(set.top_k(&q, 10).len(), 4);
        assert!(set.top_k(&q, 0).is_empty());
    }

    #[test]
    fn blocks_and_remainders_agree_with_a_plain_product() {
        let dim = 37;
        let mut set = VectorSet::new(dim);
        let mut plain = Vec::new();
        for r in 0..(BLOCK_ROWS * 3 + 5) {
            let v: Vec<f32> = (0..dim)
                .map(|i| (((r * 31 + i * 7) % 17) as f32 - 8.0) / 8.0)
                .collect();
            set.push_f32(&v);
            plain.push(
                v.iter()
                    .map(|&x| f16::from_f32(x).to_f32())
                    .collect::<Vec<_>>(),
            );
        }
        let q: Vec<f32> = (0..dim).map(|i| (i as f32).sin()).collect();
        let got = set.similarities(&q);
        for (g, row) in got.iter().zip(&plain) {
            let want: f32 = row.iter().zip(&q).map(|(a, b)| a * b).sum();
            assert!((g - want).abs() < 1e-4, "{g} vs {want}");
        }
    }
}
