//! The device memory side of the reranker: how many photos a batch can hold (from one
//! photo measured in the warm-up, or an estimate where nothing was measured), the warm-up
//! itself, and the activation budget that lets the tests run out of memory on purpose.

use std::time::Instant;

use super::super::prompt::DEFAULT_INSTRUCTION;
use super::super::{ModelError, Result, preprocess, resample};
use super::{PreparedQuery, QueryInput, Reranker};

impl Reranker {
    /// Makes the model refuse, with [`ModelError::OutOfMemory`], any step whose estimated
    /// working memory ([`Reranker::bytes_per_photo`]'s estimate, weights excluded) exceeds
    /// `bytes`, as a device with that little room left would. It lets the out-of-memory
    /// handling of a ranking be exercised on any machine; `None` (the default) removes it.
    pub fn set_activation_budget(&mut self, bytes: Option<u64>) {
        self.activation_budget = bytes;
    }

    pub(super) fn check_budget(&self, needed: u64, what: &str) -> Result<()> {
        match self.activation_budget {
            Some(budget) if needed > budget => Err(ModelError::OutOfMemory(format!(
                "{what} needs about {} MiB, over the budget of {} MiB",
                needed >> 20,
                budget >> 20
            ))),
            _ => Ok(()),
        }
    }

    /// How many photos to judge together: one on the CPU; on a GPU as many as the free
    /// memory holds at the largest resolution, up to 8. At eight photos (some 8 000 rows)
    /// the products already spend their time computing, not reading weights, and the GPU
    /// is at its power limit, so larger batches rank no faster (on the H200 8 ranked 29.6
    /// photos/s, 12 and 16 29.0-29.4), show their first scores later and take more memory
    /// (docs/PERFORMANCE.md, "Which batch size").
    pub fn suggested_batch(&self) -> usize {
        const MAX_BATCH: usize = 8;
        const RESERVE: u64 = 1 << 30;
        // What the pool keeps from earlier batches is not free for batches of another
        // size (they come in other sizes of blocks): it goes back to the device first.
        self.device.release_pooled_memory();
        let Some((free, _)) = self.device.memory() else {
            return 1;
        };
        let measured = self
            .measured_photo_bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        let (per_photo, slack) = if measured > 0 {
            // Measured on the H200 (docs/PERFORMANCE.md, "A 24 GB card"): the warm-up photo
            // at 1280 tokens took 225 MiB; in a long ranking a photo of a batch held up to
            // about 680 MiB at the peak (the next batch is prepared while the last one's
            // memory is still being handed back), and the pool reserves about 1.5 GiB
            // beyond what is in use (its blocks are rounded up).
            (measured * 3, 3 << 29)
        } else {
            (self.bytes_per_photo(self.preprocess.max_pixels), 0)
        };
        // The visual tokens kept for later queries will grow into their share of it.
        let growth = {
            let c = self.visual_cache();
            c.limit().saturating_sub(c.bytes())
        };
        let room = free
            .saturating_sub(RESERVE)
            .saturating_sub(growth)
            .saturating_sub(slack);
        (room / per_photo.max(1)).clamp(1, MAX_BATCH as u64) as usize
    }

    /// A generous estimate of the device memory one photo of `max_pixels` needs while it
    /// is judged (activations of the larger tower plus one attention block).
    pub fn bytes_per_photo(&self, max_pixels: usize) -> u64 {
        let v = &self.config.vision;
        let tokens = (max_pixels / (v.resize_factor() * v.resize_factor())) as u64;
        let patches = tokens * (v.spatial_merge_size * v.spatial_merge_size) as u64;
        self.vision_bytes(patches)
            .max(self.text_bytes(tokens + 160))
    }

    /// Estimated working memory of the vision tower on `patches` patches.
    pub(super) fn vision_bytes(&self, patches: u64) -> u64 {
        let v = &self.config.vision;
        let bytes = self.device.dtype.size_in_bytes() as u64;
        patches * (v.hidden_size as u64 * 8 + v.intermediate_size as u64 * 3) * bytes + (256 << 20)
    }

    /// Estimated working memory of the language model on one sequence of `seq` tokens.
    pub(super) fn text_bytes(&self, seq: u64) -> u64 {
        let t = &self.config.text;
        let bytes = self.device.dtype.size_in_bytes() as u64;
        seq * (t.hidden_size as u64 * 8 + t.intermediate_size as u64 * 3) * bytes + (256 << 20)
    }

    /// Runs every kernel once on a small input so that the first photo of a ranking does
    /// not pay for loading them. Returns how long it took.
    pub fn warm_up(&self) -> Result<std::time::Duration> {
        let start = Instant::now();
        let vision = &self.config.vision;
        let side = vision.resize_factor() * 2;
        let image = resample::Rgb8::new(side, side, vec![128u8; side * side * 3])
            .ok_or_else(|| ModelError::BadConfig("vision patch size".into()))?;
        let input = preprocess::patchify(&image, vision, &self.preprocess, (side, side));
        let query = self.prepare_query(
            DEFAULT_INSTRUCTION,
            &QueryInput {
                text: "warm-up".into(),
                image: None,
            },
        )?;
        let tokens = self.encode_photos(&[&input])?;
        self.judge(&query, &tokens[0])?;
        drop(tokens);
        self.measure_photo_memory(&query)?;
        Ok(start.elapsed())
    }

    /// Judges one plain photo at the largest resolution and keeps how much device memory
    /// it took above what was in use before (the memory pool's high-water mark), so that
    /// batch sizes come from the model as it runs rather than from a formula.
    fn measure_photo_memory(&self, query: &PreparedQuery) -> Result<()> {
        let Some((before, _, _)) = self.device.memory_pool() else {
            return Ok(());
        };
        let vision = &self.config.vision;
        let factor = vision.resize_factor();
        // The most visual tokens a photo can have, as a near-square grid of them.
        let most = (self.preprocess.max_pixels / (factor * factor)).max(1);
        let rows = ((most as f64).sqrt() as usize).max(1);
        let cols = (most / rows).max(1);
        let (width, height) = (cols * factor, rows * factor);
        let image = resample::Rgb8::new(width, height, vec![128u8; width * height * 3])
            .ok_or_else(|| ModelError::BadConfig("vision patch size".into()))?;
        let input = preprocess::patchify(&image, vision, &self.preprocess, (width, height));
        self.device.reset_memory_peaks();
        let tokens = self.run_vision(&[&input])?;
        self.judge(query, &tokens[0])?;
        self.synchronize()?;
        drop(tokens);
        if let Some((_, high, _)) = self.device.memory_pool() {
            // scaled up to the full token count where the grid fell short of it
            let took = high.saturating_sub(before) * most as u64 / (rows * cols) as u64;
            self.measured_photo_bytes
                .store(took, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// Device memory one photo at the largest resolution took in the warm-up (None before
    /// a warm-up on a GPU).
    pub fn measured_photo_bytes(&self) -> Option<u64> {
        Some(
            self.measured_photo_bytes
                .load(std::sync::atomic::Ordering::Relaxed),
        )
        .filter(|&b| b > 0)
    }
}
