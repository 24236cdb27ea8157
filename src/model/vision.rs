//! The Qwen2.5-VL vision tower (weights under `visual.*`): patch embedding, 2-D rotary
//! positions, blocks that attend within 112 px windows except the full-attention blocks,
//! and the merger that turns each 2x2 block of patches into one visual token of the
//! language model's width. Follows transformers' `Qwen2_5_VisionTransformerPretrainedModel`.

use candle_core::{D, Device, Tensor};
use candle_nn::VarBuilder;

use super::Result;
use super::config::VisionConfig;
use super::layers::{GatedMlp, Linear, RmsNorm, attention, rms_norm};
use super::memo::Memo;
use super::ops::{self, ScoreMask};
use super::profile::stage;

/// RMSNorm epsilon of every vision norm (hard-coded in transformers).
const VISION_NORM_EPS: f64 = 1e-6;

struct VisionBlock {
    norm1: RmsNorm,
    norm2: RmsNorm,
    /// (3 * hidden, hidden) and (3 * hidden): q, k, v stacked, as the checkpoint has them.
    qkv: Tensor,
    qkv_bias: Tensor,
    proj: Tensor,
    proj_bias: Tensor,
    mlp: GatedMlp,
    num_heads: usize,
    head_dim: usize,
}

impl VisionBlock {
    fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        let (qkv, proj) = (vb.pp("attn.qkv"), vb.pp("attn.proj"));
        Ok(VisionBlock {
            norm1: rms_norm(h, VISION_NORM_EPS, vb.pp("norm1"))?,
            norm2: rms_norm(h, VISION_NORM_EPS, vb.pp("norm2"))?,
            qkv: qkv.get((3 * h, h), "weight")?,
            qkv_bias: qkv.get(3 * h, "bias")?,
            proj: proj.get((h, h), "weight")?,
            proj_bias: proj.get(h, "bias")?,
            mlp: GatedMlp::new(h, cfg.intermediate_size, true, vb.pp("mlp"))?,
            num_heads: cfg.num_heads,
            head_dim: cfg.head_dim(),
        })
    }

    fn forward(&self, x: &Tensor, rope: &(Tensor, Tensor), segments: &Segments) -> Result<Tensor> {
        let dev = x.device();
        // q, k, v with bias and (f32) rotary, as transformers applies it to this tower.
        let (q, k, v) = stage("vision.qkv", dev, || -> Result<_> {
            let y = self.norm1.forward(x)?.matmul(&self.qkv.t()?)?;
            ops::qkv_epilogue(
                &y,
                &self.qkv_bias,
                rope,
                self.num_heads,
                self.num_heads,
                self.head_dim,
                None,
            )
        })?;
        let name = if segments.count == 1 {
            "vision.attn_full"
        } else {
            "vision.attn_window"
        };
        let attended = stage(name, dev, || {
            segments.attend(&q, &k, &v, (self.head_dim as f64).powf(-0.5))
        })?;
        let x = stage("vision.proj", dev, || -> Result<Tensor> {
            ops::linear_residual(&attended, &self.proj, Some(&self.proj_bias), x)
        })?;
        stage("vision.mlp", dev, || {
            self.mlp.forward_residual(&self.norm2.forward(&x)?, &x)
        })
    }
}

struct PatchMerger {
    ln_q: RmsNorm,
    fc1: Linear,
    fc2: Linear,
    merged_width: usize,
}

impl PatchMerger {
    fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let merged_width = cfg.hidden_size * cfg.spatial_merge_size * cfg.spatial_merge_size;
        Ok(PatchMerger {
            ln_q: rms_norm(cfg.hidden_size, VISION_NORM_EPS, vb.pp("ln_q"))?,
            fc1: Linear::new(merged_width, merged_width, true, vb.pp("mlp.0"))?,
            fc2: Linear::new(merged_width, cfg.out_hidden_size, true, vb.pp("mlp.2"))?,
            merged_width,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.ln_q.forward(x)?.reshape(((), self.merged_width))?;
        self.fc2.forward(&self.fc1.forward(&x)?.gelu_erf()?)
    }
}

/// What the tower needs per set of image grids besides the pixels: the window order, the
/// rotary tables and the attention segments. Made once per set of photo sizes.
struct Prepared {
    layout: WindowLayout,
    /// Merged tokens in window order, and back to raster order (u32, on the device).
    order: Tensor,
    back: Tensor,
    rope: (Tensor, Tensor),
    windows: Segments,
    full: Segments,
}

/// Sets of grids whose tables are kept (each a few MB on the device at most).
const PREPARED_KEPT: usize = 8;

/// The vision tower.
pub struct VisionTower {
    patch_embed: Tensor,
    blocks: Vec<VisionBlock>,
    merger: PatchMerger,
    cfg: VisionConfig,
    inv_freq: Vec<f32>,
    prepared: Memo<Vec<(usize, usize)>, Prepared>,
}

impl VisionTower {
    /// Loads the tower from `vb` (prefixed `visual` or `model.visual`).
    pub fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let p = cfg.patch_size;
        // Conv3d with kernel = stride = (2, 14, 14) and no bias is one matmul per patch.
        let patch_embed = vb
            .pp("patch_embed.proj")
            .get(
                (
                    cfg.hidden_size,
                    cfg.in_channels,
                    cfg.temporal_patch_size,
                    p,
                    p,
                ),
                "weight",
            )?
            .reshape((cfg.hidden_size, cfg.patch_input_len()))?;
        let blocks = (0..cfg.depth)
            .map(|i| VisionBlock::new(cfg, vb.pp(format!("blocks.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let merger = PatchMerger::new(cfg, vb.pp("merger"))?;
        // Axial rotary: head_dim / 4 frequencies, shared by rows and columns.
        let spatial = cfg.head_dim() / 2;
        let inv_freq = (0..spatial)
            .step_by(2)
            .map(|i| 1.0 / (cfg.rope_theta as f32).powf(i as f32 / spatial as f32))
            .collect();
        Ok(VisionTower {
            patch_embed,
            blocks,
            merger,
            cfg: cfg.clone(),
            inv_freq,
            prepared: Memo::new(PREPARED_KEPT),
        })
    }

    fn prepare(&self, grids: &[(usize, usize)], device: &Device) -> Result<Prepared> {
        let layout = WindowLayout::new(&self.cfg, grids);
        let order = Tensor::from_vec(
            layout.window_index.clone(),
            layout.window_index.len(),
            device,
        )?;
        let back = Tensor::from_vec(layout.reverse_index(), layout.window_index.len(), device)?;
        Ok(Prepared {
            order,
            back,
            rope: self.rope_tables(&layout, device)?,
            windows: Segments::new(&layout.window_bounds, device)?,
            full: Segments::new(&layout.image_bounds, device)?,
            layout,
        })
    }

    /// Visual tokens of one or more images whose patch rows are concatenated in
    /// `pixel_values` (rows x 1176, in the model's dtype); `grids` gives each image's
    /// (grid_h, grid_w) in patches. Returns (merged tokens, out_hidden_size), images in order.
    pub fn forward(&self, pixel_values: &Tensor, grids: &[(usize, usize)]) -> Result<Tensor> {
        let device = pixel_values.device();
        let unit = self.cfg.spatial_merge_size * self.cfg.spatial_merge_size;
        let (mut x, prep) = stage("vision.prepare", device, || -> Result<_> {
            let prep = self
                .prepared
                .get_or_try(grids.to_vec(), |g| self.prepare(g, device))?;
            let n = prep.layout.rows();
            let x = pixel_values.matmul(&self.patch_embed.t()?)?;
            let hidden = x.dim(1)?;
            let x = x
                .reshape((n / unit, unit * hidden))?
                .index_select(&prep.order, 0)?
                .reshape((n, hidden))?;
            Ok((x, prep))
        })?;
        for (i, block) in self.blocks.iter().enumerate() {
            let segments = if self.cfg.fullatt_block_indexes.contains(&i) {
                &prep.full
            } else {
                &prep.windows
            };
            x = block.forward(&x, &prep.rope, segments)?;
        }
        stage("vision.merger", device, || -> Result<Tensor> {
            let merged = self.merger.forward(&x)?;
            Ok(merged.index_select(&prep.back, 0)?)
        })
    }

    /// cos and sin of the rotary angles of every patch row (in window order), f32,
    /// (rows, head_dim / 2): the row frequencies, then the column frequencies.
    fn rope_tables(&self, layout: &WindowLayout, device: &Device) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len() * 2;
        let mut cos = Vec::with_capacity(layout.positions.len() * half);
        let mut sin = Vec::with_capacity(cos.capacity());
        for &(h, w) in &layout.positions {
            for pos in [h, w] {
                for &f in &self.inv_freq {
                    let angle = pos as f32 * f;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
        let shape = (layout.positions.len(), half);
        Ok((
            Tensor::from_vec(cos, shape, device)?,
            Tensor::from_vec(sin, shape, device)?,
        ))
    }
}

/// Where each patch row goes for window attention: transformers' `get_vision_window_index`
/// and `get_vision_position_ids`, for several images at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowLayout {
    /// Merged-token indices in window order (a permutation of 0..tokens).
    pub window_index: Vec<u32>,
    /// Patch-row boundaries of the windows, after the permutation.
    pub window_bounds: Vec<usize>,
    /// Patch-row boundaries of the images (the full-attention segments).
    pub image_bounds: Vec<usize>,
    /// (row, column) of each patch row, in window order.
    pub positions: Vec<(usize, usize)>,
}

impl WindowLayout {
    pub fn new(cfg: &VisionConfig, grids: &[(usize, usize)]) -> Self {
        let m = cfg.spatial_merge_size;
        let win = cfg.window_merged_tokens();
        let unit = m * m;
        let mut window_index = Vec::new();
        let mut window_bounds = vec![0];
        let mut image_bounds = vec![0];
        let mut block_positions: Vec<(usize, usize)> = Vec::new(); // per patch row, merge order
        let mut offset = 0usize;
        for &(gh, gw) in grids {
            let (lh, lw) = (gh / m, gw / m);
            for wr in 0..lh.div_ceil(win) {
                for wc in 0..lw.div_ceil(win) {
                    let mut count = 0;
                    for r in wr * win..((wr + 1) * win).min(lh) {
                        for c in wc * win..((wc + 1) * win).min(lw) {
                            window_index.push((offset + r * lw + c) as u32);
                            count += 1;
                        }
                    }
                    let last = *window_bounds.last().unwrap_or(&0);
                    if count > 0 {
                        window_bounds.push(last + count * unit);
                    }
                }
            }
            for br in 0..lh {
                for bc in 0..lw {
                    for i in 0..m {
                        for j in 0..m {
                            block_positions.push((br * m + i, bc * m + j));
                        }
                    }
                }
            }
            offset += lh * lw;
            image_bounds.push(image_bounds.last().unwrap_or(&0) + gh * gw);
        }
        let positions = window_index
            .iter()
            .flat_map(|&t| {
                block_positions[t as usize * unit..(t as usize + 1) * unit]
                    .iter()
                    .copied()
            })
            .collect();
        WindowLayout {
            window_index,
            window_bounds,
            image_bounds,
            positions,
        }
    }

    /// Number of patch rows.
    pub fn rows(&self) -> usize {
        self.positions.len()
    }

    /// The permutation that puts merged tokens back in raster order.
    pub fn reverse_index(&self) -> Vec<u32> {
        let mut back = vec![0u32; self.window_index.len()];
        for (i, &t) in self.window_index.iter().enumerate() {
            back[t as usize] = i as u32;
        }
        back
    }
}

/// Attention restricted to contiguous segments of rows (windows or whole images): rows are
/// gathered into a padded batch of segments, attention runs with the padding masked, and
/// the real rows are scattered back. A single segment needs neither step.
struct Segments {
    /// Segment boundaries in rows (segments + 1, u32, on the device).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    bounds: Tensor,
    /// Rows of the padded batch (padding points at row 0 and is masked as a key).
    gather: Option<Tensor>,
    /// For each row, its place in the padded batch.
    scatter: Option<Tensor>,
    /// Real rows per segment, on the host and on the device (u32).
    lengths: Vec<u32>,
    lengths_device: Tensor,
    count: usize,
    longest: usize,
    /// For each row, the first and one past the last row of its segment (u32, on the
    /// device), for the flash-attention kernel; only made on CUDA.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    row_ranges: Option<(Tensor, Tensor)>,
    /// The boundaries on the host, for the flash kernel's table of where its blocks start.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    host_bounds: Vec<usize>,
    /// That table, made at the first launch (its rows a block depend on the tiling).
    #[cfg(feature = "cuda")]
    starts: std::sync::OnceLock<super::cuda::BlockStarts>,
}

impl Segments {
    fn new(bounds: &[usize], device: &Device) -> Result<Self> {
        let lengths: Vec<u32> = bounds.windows(2).map(|b| (b[1] - b[0]) as u32).collect();
        let count = lengths.len();
        let longest = lengths.iter().copied().max().unwrap_or(0) as usize;
        let lengths_device = Tensor::new(lengths.as_slice(), device)?;
        let bound_values: Vec<u32> = bounds.iter().map(|&b| b as u32).collect();
        let bounds_device = Tensor::new(bound_values.as_slice(), device)?;
        let row_ranges = if device.is_cuda() {
            let rows = *bounds.last().unwrap_or(&0);
            let (mut lo, mut hi) = (Vec::with_capacity(rows), Vec::with_capacity(rows));
            for b in bounds.windows(2) {
                for _ in b[0]..b[1] {
                    lo.push(b[0] as u32);
                    hi.push(b[1] as u32);
                }
            }
            Some((
                Tensor::from_vec(lo, rows, device)?,
                Tensor::from_vec(hi, rows, device)?,
            ))
        } else {
            None
        };
        if count == 1 {
            return Ok(Segments {
                bounds: bounds_device,
                gather: None,
                scatter: None,
                lengths,
                lengths_device,
                count,
                longest,
                row_ranges,
                host_bounds: bounds.to_vec(),
                #[cfg(feature = "cuda")]
                starts: std::sync::OnceLock::new(),
            });
        }
        let mut gather = Vec::with_capacity(count * longest);
        let mut scatter = Vec::with_capacity(*bounds.last().unwrap_or(&0));
        for (s, &len) in lengths.iter().enumerate() {
            for j in 0..longest {
                let real = j < len as usize;
                gather.push(if real { (bounds[s] + j) as u32 } else { 0 });
                if real {
                    scatter.push((s * longest + j) as u32);
                }
            }
        }
        Ok(Segments {
            bounds: bounds_device,
            gather: Some(Tensor::from_vec(gather, count * longest, device)?),
            scatter: Some(Tensor::from_vec(scatter.clone(), scatter.len(), device)?),
            lengths,
            lengths_device,
            count,
            longest,
            row_ranges,
            host_bounds: bounds.to_vec(),
            #[cfg(feature = "cuda")]
            starts: std::sync::OnceLock::new(),
        })
    }

    /// Where the flash kernel's blocks of `block_rows` rows start so that each stays in its
    /// segment (made once); none with `LYCHEE_FLASH_BLOCKS=rows`.
    #[cfg(feature = "cuda")]
    fn block_starts(
        &self,
        block_rows: u32,
        device: &Device,
    ) -> Result<Option<super::cuda::BlockStarts>> {
        if !super::ops::flash_blocks_by_segment() {
            return Ok(None);
        }
        if let Some(s) = self.starts.get()
            && s.block_rows() == block_rows
        {
            return Ok(Some(s.clone()));
        }
        let fresh = super::cuda::BlockStarts::new(&self.host_bounds, block_rows, device)?;
        let _ = self.starts.set(fresh.clone());
        Ok(Some(fresh))
    }

    /// `q`, `k`, `v`: (rows, heads, dim). Returns (rows, heads * dim).
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
        let (rows, heads, dim) = q.dims3()?;
        // bf16 on CUDA: the flash-attention kernel, which never materializes the scores.
        #[cfg(feature = "cuda")]
        if let Some((lo, hi)) = &self.row_ranges
            && super::ops::flash_enabled()
            && super::cuda::flash_supported(dim, q.dtype())
            && [q, k, v].iter().all(|t| super::ops::flash_ready(t))
        {
            // Windows are a few dozen rows each; a full block is one photo's patches.
            let use_ = if self.longest <= 256 {
                super::cuda::FlashUse::Windows
            } else {
                super::cuda::FlashUse::Full
            };
            // Blocks that follow the windows (and photos) read only their own keys.
            let tiling = super::cuda::flash_tiling(use_, dim, q.device().as_cuda_device()?);
            let starts = self.block_starts(tiling.block_rows(), q.device())?;
            let out = super::cuda::flash_rows(
                q,
                k,
                v,
                lo,
                hi,
                starts.as_ref(),
                scale as f32,
                use_,
                Some(tiling),
            )?;
            return Ok(out.reshape((rows, heads * dim))?);
        }
        // Short segments (the windows) run as one fused kernel on CUDA.
        #[cfg(feature = "cuda")]
        if self.count > 1
            && q.device().is_cuda()
            && super::cuda::segment_attention_fits(self.longest, dim, q.dtype())
            && q.is_contiguous()
            && k.is_contiguous()
            && v.is_contiguous()
        {
            let out =
                super::cuda::segment_attention(q, k, v, &self.bounds, self.longest, scale as f32)?;
            return Ok(out.reshape((rows, heads * dim))?);
        }
        let batch = |t: &Tensor| -> Result<Tensor> {
            let t = t.reshape((rows, heads * dim))?;
            let t = match &self.gather {
                Some(g) => t.index_select(g, 0)?,
                None => t,
            };
            Ok(t.reshape((self.count, self.longest, heads, dim))?
                .transpose(1, 2)?)
        };
        let uneven = self.lengths.iter().any(|&l| l as usize != self.longest);
        let mask = if uneven {
            ScoreMask::Segments {
                host: &self.lengths,
                device: &self.lengths_device,
            }
        } else {
            ScoreMask::All
        };
        let out = attention(&batch(q)?, &batch(k)?, &batch(v)?, mask, scale)?;
        let out = out
            .transpose(1, 2)?
            .contiguous()?
            .reshape((self.count * self.longest, heads * dim))?;
        Ok(match &self.scatter {
            Some(s) => out.index_select(s, 0)?,
            None => out,
        })
    }
}

/// Visual tokens of each image, split from the output of [`VisionTower::forward`].
pub fn split_per_image(tokens: &Tensor, counts: &[usize]) -> Result<Vec<Tensor>> {
    let mut out = Vec::with_capacity(counts.len());
    let mut start = 0;
    for &n in counts {
        out.push(tokens.narrow(0, start, n)?);
        start += n;
    }
    debug_assert_eq!(start, tokens.dim(D::Minus2).unwrap_or(start));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> VisionConfig {
        VisionConfig {
            depth: 1,
            hidden_size: 8,
            hidden_act: "silu".into(),
            intermediate_size: 8,
            num_heads: 2,
            in_channels: 3,
            patch_size: 14,
            spatial_merge_size: 2,
            temporal_patch_size: 2,
            window_size: 112,
            out_hidden_size: 8,
            fullatt_block_indexes: vec![],
            rope_theta: 10_000.0,
        }
    }

    #[test]
    fn window_layout_matches_transformers() {
        // grid 12 x 10 patches -> 6 x 5 merged -> windows of 4x4: [4x4, 4x1, 2x4, 2x1]
        let layout = WindowLayout::new(&cfg(), &[(12, 10)]);
        assert_eq!(layout.window_bounds, vec![0, 64, 80, 112, 120]);
        assert_eq!(&layout.window_index[..5], &[0, 1, 2, 3, 5]);
        assert_eq!(&layout.window_index[16..20], &[4, 9, 14, 19]);
        assert_eq!(layout.image_bounds, vec![0, 120]);
        assert_eq!(layout.positions[0..4], [(0, 0), (0, 1), (1, 0), (1, 1)]);
        let back = layout.reverse_index();
        for (i, &t) in layout.window_index.iter().enumerate() {
            assert_eq!(back[t as usize] as usize, i);
        }
    }

    #[test]
    fn window_layout_of_two_images_offsets_the_second() {
        let layout = WindowLayout::new(&cfg(), &[(4, 4), (2, 2)]);
        assert_eq!(layout.window_index, vec![0, 1, 2, 3, 4]);
        assert_eq!(layout.window_bounds, vec![0, 16, 20]);
        assert_eq!(layout.image_bounds, vec![0, 16, 20]);
    }
}
