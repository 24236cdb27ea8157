//! How the flash-attention kernels (src/kernels/flash_attention.cu for every GPU,
//! src/kernels/flash_hopper.cu for Hopper's warpgroup products) split their work: the
//! tilings they are compiled for, the one each use takes, and the `LYCHEE_FLASH_TILES`
//! override for side-by-side measurements. Plain data, so that the choice is tested on the
//! CPU; src/model/cuda/flash_attention.rs launches what it says.
#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

/// How one launch splits the work: `warps` warps per block, each owning `rows` query rows
/// (16 or 32), and key tiles of `keys` rows. More warps per block read each key tile from L2
/// once for more queries; a warp of 32 rows reads each key and value fragment from shared
/// memory once for two products, at the cost of twice the registers; longer tiles mean
/// fewer barriers but more shared memory. A `hopper` tiling runs flash_hopper.cu, where
/// each four warps (a warpgroup, 64 rows) issue their products together; it runs only on a
/// GPU of compute capability 9.0 with that file built for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiling {
    pub warps: u32,
    pub keys: u32,
    pub rows: u32,
    pub hopper: bool,
}

impl Tiling {
    /// Query rows per block.
    pub fn block_rows(self) -> u32 {
        self.warps * self.rows
    }

    /// The kernel's name for heads of `dim` (`FLASH(D, W, BN, MT, MINB)` in
    /// flash_attention.cu, `FLASH_WGMMA(D, G, BN, MINB)` in flash_hopper.cu).
    pub fn kernel_name(self, dim: usize) -> String {
        if self.hopper {
            return format!("flash_wgmma_d{dim}_g{}_n{}", self.warps / 4, self.keys);
        }
        format!(
            "flash_attention_d{dim}_w{}_n{}_m{}",
            self.warps,
            self.keys,
            self.rows / 16
        )
    }
}

impl std::fmt::Display for Tiling {
    /// `4x64` for warps of 16 rows, `4x64x32` for warps of 32, `8x64h` for two warpgroups
    /// of Hopper's products (what `LYCHEE_FLASH_TILES` reads).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.warps, self.keys)?;
        if self.rows != 16 {
            write!(f, "x{}", self.rows)?;
        }
        if self.hopper {
            write!(f, "h")?;
        }
        Ok(())
    }
}

const fn t(warps: u32, keys: u32, rows: u32) -> Tiling {
    Tiling {
        warps,
        keys,
        rows,
        hopper: false,
    }
}

/// `warps` / 4 warpgroups of Hopper's products over key tiles of `keys` rows.
const fn h(warps: u32, keys: u32) -> Tiling {
    Tiling {
        warps,
        keys,
        rows: 16,
        hopper: true,
    }
}

/// What a launch is for, which decides its [`Tiling`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashUse {
    /// The vision tower's window blocks: segments of at most a few hundred rows.
    Windows,
    /// The vision tower's full blocks: one segment per photo.
    Full,
    /// The language model: causal over the prompt prefix and the photo's tokens.
    Causal,
}

/// The tilings flash_attention.cu and flash_hopper.cu are compiled for (`FLASH(D, W, BN,
/// MT, MINB)` and `FLASH_WGMMA(D, G, BN, MINB)` there), per head size.
const COMPILED: [(usize, Tiling); 8] = [
    (16, t(4, 64, 16)),
    (64, t(4, 64, 16)),
    (80, t(4, 64, 16)),
    (80, t(4, 64, 32)),
    (128, t(4, 32, 16)),
    (80, h(12, 64)),
    (80, h(16, 64)),
    (128, h(12, 64)),
];

/// The tilings compiled for heads of `dim` values, those of Hopper's products only where
/// `hopper` (the GPU and the build have them).
pub fn compiled_for(dim: usize, hopper: bool) -> Vec<Tiling> {
    COMPILED
        .iter()
        .filter(|(d, t)| *d == dim && (hopper || !t.hopper))
        .map(|(_, t)| *t)
        .collect()
}

/// The tilings `LYCHEE_FLASH_TILES` names, read once.
fn chosen() -> &'static [(FlashUse, Tiling)] {
    static CHOSEN: std::sync::OnceLock<Vec<(FlashUse, Tiling)>> = std::sync::OnceLock::new();
    CHOSEN.get_or_init(|| {
        std::env::var("LYCHEE_FLASH_TILES")
            .map(|v| parse_tiles(&v))
            .unwrap_or_default()
    })
}

/// The tiling for `use_` at heads of `dim`: `LYCHEE_FLASH_TILES` (for example
/// `full=8x64,windows=4x64`) where it names a compiled one, else the default; Hopper's
/// products only where `hopper`.
pub fn tiling_for(use_: FlashUse, dim: usize, hopper: bool) -> Tiling {
    choose(use_, dim, chosen(), hopper)
}

/// The language model's tiling for `n_q` queries: a few (the last one alone) fill a block
/// of the fewest warps best.
pub fn tiling_for_causal(dim: usize, n_q: usize, hopper: bool) -> Tiling {
    choose_causal(dim, n_q, chosen(), hopper)
}

fn choose(use_: FlashUse, dim: usize, chosen: &[(FlashUse, Tiling)], hopper: bool) -> Tiling {
    let compiled = compiled_for(dim, hopper);
    let default = default_tiling(use_, dim, hopper);
    chosen
        .iter()
        .find(|(u, t)| *u == use_ && compiled.contains(t))
        .map(|(_, t)| *t)
        // A use the defaults do not name for this head size takes what is compiled for it.
        .or_else(|| (!compiled.contains(&default)).then(|| compiled.first().copied())?)
        .unwrap_or(default)
}

fn choose_causal(dim: usize, n_q: usize, chosen: &[(FlashUse, Tiling)], hopper: bool) -> Tiling {
    let tiling = choose(FlashUse::Causal, dim, chosen, hopper);
    let few = Tiling {
        warps: 4,
        rows: 16,
        ..tiling
    };
    if n_q < 64 && compiled_for(dim, hopper).contains(&few) {
        few
    } else {
        tiling
    }
}

/// The tilings measured fastest on the H200 for the model's shapes (docs/PERFORMANCE.md,
/// "Where a batch's time goes" and "The warpgroup kernel's products unserialized").
fn default_tiling(use_: FlashUse, dim: usize, hopper: bool) -> Tiling {
    match (use_, dim, hopper) {
        (FlashUse::Causal, 128, _) => t(4, 32, 16),
        (FlashUse::Full, 80, true) => h(16, 64),
        (FlashUse::Full, 80, _) => t(4, 64, 32),
        _ => t(4, 64, 16),
    }
}

/// `full=8x64,windows=4x64,causal=4x32x32`: the entries that parse (warps x keys, then
/// optionally x rows per warp, 16 when left out).
fn parse_tiles(text: &str) -> Vec<(FlashUse, Tiling)> {
    text.split(',')
        .filter_map(|entry| {
            let (name, tile) = entry.trim().split_once('=')?;
            let use_ = match name.trim() {
                "full" => FlashUse::Full,
                "windows" => FlashUse::Windows,
                "causal" => FlashUse::Causal,
                _ => return None,
            };
            let tile = tile.trim();
            let (tile, hopper) = match tile.strip_suffix('h') {
                Some(rest) => (rest, true),
                None => (tile, false),
            };
            let mut sizes = tile.split('x').map(|v| v.trim().parse::<u32>().ok());
            let (warps, keys) = (sizes.next()??, sizes.next()??);
            let rows = sizes.next().unwrap_or(Some(16))?;
            let tiling = Tiling {
                hopper,
                ..t(warps, keys, rows)
            };
            (sizes.next().is_none() && (!hopper || rows == 16)).then_some((use_, tiling))
        })
        .collect()
}

/// Dynamic shared memory a block of `tiling` uses for heads of `dim`: two stages of k and v
/// tiles, rows padded by 8 values (flash_attention.cu); for Hopper's products the block's q
/// rows and three stages, unpadded (flash_hopper.cu).
pub fn smem_bytes(dim: usize, tiling: Tiling) -> u32 {
    if tiling.hopper {
        return (tiling.block_rows() + 6 * tiling.keys) * dim as u32 * 2;
    }
    4 * tiling.keys * (dim as u32 + 8) * 2
}

/// Where the blocks of a launch over contiguous segments of rows (windows, photos) with
/// boundaries `bounds` start when no block may straddle two segments: each segment cut into
/// pieces of at most `block_rows` rows, then the end of the last segment. A block that
/// straddles two windows loads the keys of both and masks half of them; one that stays in
/// its window loads each key tile once. Empty segments give no block.
pub fn block_starts(bounds: &[usize], block_rows: usize) -> Vec<u32> {
    let block_rows = block_rows.max(1);
    let mut starts = Vec::with_capacity(bounds.len());
    for b in bounds.windows(2) {
        starts.extend((b[0]..b[1]).step_by(block_rows).map(|r| r as u32));
    }
    starts.push(bounds.last().copied().unwrap_or(0) as u32);
    starts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_override_parses_what_it_can() {
        assert_eq!(
            parse_tiles(" full=8x64, causal = 4x32 ,windows=2x16"),
            vec![
                (FlashUse::Full, t(8, 64, 16)),
                (FlashUse::Causal, t(4, 32, 16)),
                (FlashUse::Windows, t(2, 16, 16)),
            ]
        );
        assert_eq!(
            parse_tiles("full=4x64x32,causal=4x32x16"),
            vec![
                (FlashUse::Full, t(4, 64, 32)),
                (FlashUse::Causal, t(4, 32, 16))
            ]
        );
        assert_eq!(
            parse_tiles("full=8x64h,causal=8x64xh,windows=4x64x32h,causal=12x64h"),
            vec![(FlashUse::Full, h(8, 64)), (FlashUse::Causal, h(12, 64))]
        );
        assert!(parse_tiles("full=4x64x32x2,causal=4x").is_empty());
        assert!(parse_tiles("").is_empty());
        assert_eq!(
            parse_tiles("vision=8x64,full=8,full=ax64,causal=4x32"),
            vec![(FlashUse::Causal, t(4, 32, 16))]
        );
    }

    #[test]
    fn the_defaults_are_compiled() {
        for hopper in [false, true] {
            for dim in [16, 64, 80, 128] {
                for use_ in [FlashUse::Windows, FlashUse::Full, FlashUse::Causal] {
                    let chosen = choose(use_, dim, &[], hopper);
                    assert!(
                        compiled_for(dim, hopper).contains(&chosen),
                        "{use_:?} {dim}"
                    );
                    assert!(hopper || !chosen.hopper);
                    for n_q in [1, 63, 64, 1006] {
                        let chosen = choose_causal(dim, n_q, &[], hopper);
                        assert!(compiled_for(dim, hopper).contains(&chosen));
                    }
                }
            }
        }
        assert_eq!(choose(FlashUse::Full, 80, &[], false), t(4, 64, 32));
        assert_eq!(choose(FlashUse::Full, 80, &[], true), h(16, 64));
        assert_eq!(choose(FlashUse::Windows, 80, &[], true), t(4, 64, 16));
        assert_eq!(choose(FlashUse::Causal, 128, &[], true), t(4, 32, 16));
        assert_eq!(choose(FlashUse::Causal, 128, &[], false), t(4, 32, 16));
    }

    #[test]
    fn an_override_counts_only_where_it_is_compiled() {
        let chosen = parse_tiles("full=4x64,windows=4x64x32,causal=8x64");
        assert_eq!(choose(FlashUse::Full, 80, &chosen, true), t(4, 64, 16));
        assert_eq!(choose(FlashUse::Windows, 80, &chosen, false), t(4, 64, 32));
        // Not compiled (any more) for heads of 80: the default.
        let chosen = parse_tiles("full=8x64");
        assert_eq!(choose(FlashUse::Full, 80, &chosen, false), t(4, 64, 32));
        // Not compiled for heads of 128: the default.
        assert_eq!(choose(FlashUse::Causal, 128, &chosen, false), t(4, 32, 16));
        // No default for full blocks of 128: what is compiled.
        assert_eq!(choose(FlashUse::Full, 128, &chosen, false), t(4, 32, 16));
        // Hopper's products where the GPU has them, else the default.
        let chosen = parse_tiles("causal=12x64h,full=4x64x32");
        assert_eq!(choose(FlashUse::Causal, 128, &chosen, true), h(12, 64));
        assert_eq!(choose(FlashUse::Causal, 128, &chosen, false), t(4, 32, 16));
        assert_eq!(choose(FlashUse::Full, 80, &chosen, true), t(4, 64, 32));
    }

    #[test]
    fn names_and_labels_follow_the_kernels() {
        assert_eq!(
            t(8, 64, 16).kernel_name(80),
            "flash_attention_d80_w8_n64_m1"
        );
        assert_eq!(
            t(4, 32, 32).kernel_name(128),
            "flash_attention_d128_w4_n32_m2"
        );
        assert_eq!(h(8, 64).kernel_name(80), "flash_wgmma_d80_g2_n64");
        assert_eq!(h(12, 64).kernel_name(128), "flash_wgmma_d128_g3_n64");
        assert_eq!(t(4, 64, 32).to_string(), "4x64x32");
        assert_eq!(h(8, 128).to_string(), "8x128h");
        assert_eq!(t(4, 32, 32).block_rows(), 128);
        for (_, tiling) in COMPILED {
            assert_eq!(
                parse_tiles(&format!("full={tiling}")),
                vec![(FlashUse::Full, tiling)]
            );
            if tiling.hopper {
                // Whole warpgroups.
                assert_eq!(tiling.warps % 4, 0, "{tiling}");
            } else {
                // The q tile passes through a stage of keys and values (static_assert there).
                assert!(tiling.block_rows() <= 2 * tiling.keys, "{tiling}");
            }
        }
    }

    #[test]
    fn shared_memory_fits_the_default_limit() {
        for (dim, tiling) in COMPILED {
            let limit = if tiling.hopper { 227 } else { 48 } * 1024;
            assert!(smem_bytes(dim, tiling) <= limit, "{dim} {tiling:?}");
        }
        assert_eq!(smem_bytes(80, t(8, 64, 16)), 4 * 64 * 88 * 2);
        assert_eq!(smem_bytes(80, h(8, 64)), (128 + 384) * 80 * 2);
    }

    #[test]
    fn the_kernels_are_the_ones_flash_attention_cu_builds() {
        let source = include_str!("../kernels/flash_attention.cu");
        for (dim, tiling) in COMPILED.iter().filter(|(_, t)| !t.hopper) {
            let line = format!(
                "\nFLASH({dim}, {}, {}, {}, ",
                tiling.warps,
                tiling.keys,
                tiling.rows / 16
            );
            assert!(source.contains(&line), "{line}");
        }
    }

    #[test]
    fn the_hopper_kernels_are_the_ones_flash_hopper_cu_builds() {
        let source = include_str!("../kernels/flash_hopper.cu");
        for (dim, tiling) in COMPILED.iter().filter(|(_, t)| t.hopper) {
            let line = format!("FLASH_WGMMA({dim}, {}, {}, ", tiling.warps / 4, tiling.keys);
            assert!(source.contains(&line), "{line}");
        }
    }

    #[test]
    fn blocks_follow_the_segments() {
        // windows of 64, 16, 32 and 8 rows, as a photo's right and bottom edges give
        let bounds = [0, 64, 80, 112, 120];
        assert_eq!(block_starts(&bounds, 64), vec![0, 64, 80, 112, 120]);
        assert_eq!(
            block_starts(&bounds, 16),
            vec![0, 16, 32, 48, 64, 80, 96, 112, 120]
        );
        // a photo longer than a block is cut, its last block short; an empty segment
        // gives none
        assert_eq!(
            block_starts(&[0, 130, 130, 140], 64),
            vec![0, 64, 128, 130, 140]
        );
        assert_eq!(block_starts(&[0], 64), vec![0]);
        // no span is longer than a block, and every row is in one
        let starts = block_starts(&[0, 3996, 7992], 128);
        assert!(starts.windows(2).all(|w| w[1] > w[0] && w[1] - w[0] <= 128));
        assert_eq!(starts.len(), 2 * 32 + 1);
    }
}
