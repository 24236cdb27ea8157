//! How the flash-attention kernel (src/kernels/flash_attention.cu) splits its work: the
//! tilings it is compiled for, the one each use takes, and the `LYCHEE_FLASH_TILES`
//! override for side-by-side measurements. Plain data, so that the choice is tested on the
//! CPU; src/model/cuda/flash_attention.rs launches what it says.
#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

/// How one launch splits the work: `warps` warps per block, each owning `rows` query rows
/// (16 or 32), and key tiles of `keys` rows. More warps per block read each key tile from L2
/// once for more queries; a warp of 32 rows reads each key and value fragment from shared
/// memory once for two products, at the cost of twice the registers; longer tiles mean
/// fewer barriers but more shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiling {
    pub warps: u32,
    pub keys: u32,
    pub rows: u32,
}

impl Tiling {
    /// Query rows per block.
    pub fn block_rows(self) -> u32 {
        self.warps * self.rows
    }

    /// The kernel's name for heads of `dim` (`FLASH(D, W, BN, MT, MINB)` in
    /// flash_attention.cu).
    pub fn kernel_name(self, dim: usize) -> String {
        format!(
            "flash_attention_d{dim}_w{}_n{}_m{}",
            self.warps,
            self.keys,
            self.rows / 16
        )
    }
}

impl std::fmt::Display for Tiling {
    /// `4x64` for warps of 16 rows, `4x64x32` for warps of 32 (what `LYCHEE_FLASH_TILES`
    /// reads).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.warps, self.keys)?;
        if self.rows != 16 {
            write!(f, "x{}", self.rows)?;
        }
        Ok(())
    }
}

const fn t(warps: u32, keys: u32, rows: u32) -> Tiling {
    Tiling { warps, keys, rows }
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

/// The tilings flash_attention.cu is compiled for (`FLASH(D, W, BN, MT, MINB)` there), per
/// head size.
const COMPILED: [(usize, Tiling); 5] = [
    (16, t(4, 64, 16)),
    (64, t(4, 64, 16)),
    (80, t(4, 64, 16)),
    (80, t(4, 64, 32)),
    (128, t(4, 32, 16)),
];

/// The tilings compiled for heads of `dim` values.
pub fn compiled_for(dim: usize) -> Vec<Tiling> {
    COMPILED
        .iter()
        .filter(|(d, _)| *d == dim)
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
/// `full=8x64,windows=4x64`) where it names a compiled one, else the default.
pub fn tiling_for(use_: FlashUse, dim: usize) -> Tiling {
    choose(use_, dim, chosen())
}

/// The language model's tiling for `n_q` queries: a few (the last one alone) fill a block
/// of the fewest warps best.
pub fn tiling_for_causal(dim: usize, n_q: usize) -> Tiling {
    choose_causal(dim, n_q, chosen())
}

fn choose(use_: FlashUse, dim: usize, chosen: &[(FlashUse, Tiling)]) -> Tiling {
    let compiled = compiled_for(dim);
    let default = default_tiling(use_, dim);
    chosen
        .iter()
        .find(|(u, t)| *u == use_ && compiled.contains(t))
        .map(|(_, t)| *t)
        // A use the defaults do not name for this head size takes what is compiled for it.
        .or_else(|| (!compiled.contains(&default)).then(|| compiled.first().copied())?)
        .unwrap_or(default)
}

fn choose_causal(dim: usize, n_q: usize, chosen: &[(FlashUse, Tiling)]) -> Tiling {
    let tiling = choose(FlashUse::Causal, dim, chosen);
    let few = Tiling {
        warps: 4,
        rows: 16,
        ..tiling
    };
    if n_q < 64 && compiled_for(dim).contains(&few) {
        few
    } else {
        tiling
    }
}

/// The tilings measured fastest on the H200 for the model's shapes (docs/PERFORMANCE.md,
/// "Where a batch's time goes").
fn default_tiling(use_: FlashUse, dim: usize) -> Tiling {
    match (use_, dim) {
        (FlashUse::Causal, 128) => t(4, 32, 16),
        (FlashUse::Full, 80) => t(4, 64, 32),
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
            let mut sizes = tile.trim().split('x').map(|v| v.trim().parse::<u32>().ok());
            let (warps, keys) = (sizes.next()??, sizes.next()??);
            let rows = sizes.next().unwrap_or(Some(16))?;
            sizes
                .next()
                .is_none()
                .then_some((use_, t(warps, keys, rows)))
        })
        .collect()
}

/// Dynamic shared memory a block of `tiling` uses for heads of `dim`: two stages of k and v
/// tiles, rows padded by 8 values (flash_attention.cu).
pub fn smem_bytes(dim: usize, tiling: Tiling) -> u32 {
    4 * tiling.keys * (dim as u32 + 8) * 2
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
        assert!(parse_tiles("full=4x64x32x2,causal=4x").is_empty());
        assert!(parse_tiles("").is_empty());
        assert_eq!(
            parse_tiles("vision=8x64,full=8,full=ax64,causal=4x32"),
            vec![(FlashUse::Causal, t(4, 32, 16))]
        );
    }

    #[test]
    fn the_defaults_are_compiled() {
        for dim in [16, 64, 80, 128] {
            for use_ in [FlashUse::Windows, FlashUse::Full, FlashUse::Causal] {
                assert!(
                    compiled_for(dim).contains(&choose(use_, dim, &[])),
                    "{use_:?} {dim}"
                );
                for n_q in [1, 63, 64, 1006] {
                    assert!(compiled_for(dim).contains(&choose_causal(dim, n_q, &[])));
                }
            }
        }
        assert_eq!(choose(FlashUse::Full, 80, &[]), t(4, 64, 32));
        assert_eq!(choose(FlashUse::Windows, 80, &[]), t(4, 64, 16));
        assert_eq!(choose(FlashUse::Causal, 128, &[]), t(4, 32, 16));
    }

    #[test]
    fn an_override_counts_only_where_it_is_compiled() {
        let chosen = parse_tiles("full=4x64,windows=4x64x32,causal=8x64");
        assert_eq!(choose(FlashUse::Full, 80, &chosen), t(4, 64, 16));
        assert_eq!(choose(FlashUse::Windows, 80, &chosen), t(4, 64, 32));
        // Not compiled (any more) for heads of 80: the default.
        let chosen = parse_tiles("full=8x64");
        assert_eq!(choose(FlashUse::Full, 80, &chosen), t(4, 64, 32));
        // Not compiled for heads of 128: the default.
        assert_eq!(choose(FlashUse::Causal, 128, &chosen), t(4, 32, 16));
        // No default for full blocks of 128: what is compiled.
        assert_eq!(choose(FlashUse::Full, 128, &chosen), t(4, 32, 16));
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
        assert_eq!(t(4, 64, 32).to_string(), "4x64x32");
        assert_eq!(t(4, 32, 32).block_rows(), 128);
        for (_, tiling) in COMPILED {
            assert_eq!(
                parse_tiles(&format!("full={tiling}")),
                vec![(FlashUse::Full, tiling)]
            );
            // The q tile passes through the key and value stages (static_assert there).
            assert!(tiling.block_rows() <= 4 * tiling.keys, "{tiling}");
        }
    }

    #[test]
    fn shared_memory_fits_the_default_limit() {
        for (dim, tiling) in COMPILED {
            assert!(smem_bytes(dim, tiling) <= 48 * 1024, "{dim} {tiling:?}");
        }
        assert_eq!(smem_bytes(80, t(8, 64, 16)), 4 * 64 * 88 * 2);
    }
}
