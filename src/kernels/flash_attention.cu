// Attention without materialized scores (FlashAttention-2's scheme) for bf16 q, k, v with
// tensor cores (mma.sync m16n8k16, f32 accumulation). One block of W warps per (16 W query
// rows, head, batch); each warp owns 16 query rows and walks the keys BN at a time with an
// online softmax in f32 (exp2 of scores pre-multiplied by scale * log2(e)). The block's warps
// share each key tile, so more warps per block read the keys fewer times from L2. The probabilities
// are rounded to bf16 for the product with v, as fused attention in PyTorch does.
//
// Element (b, h, i, d) of q is q[b * q_sb + h * q_sh + i * q_si + d] (q_strides), likewise for out; key
// j < past comes from kp / vp (one batch, strides p_sh, p_si: a cached prefix), key
// j >= past from k / v at row j - past. Query head h reads key head h / group. Query i is
// row q_off + i; which keys it sees:
//   causal: 0 .. past + q_off + i (inclusive);
//   else:   lo[i] .. hi[i] (exclusive), from per-row tables (segments, windows).
// Rows and keys are 16-byte aligned: strides and offsets are multiples of 8 values.
#include "flash.cuh"

__device__ __forceinline__ void mma_bf16_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8x8 bf16 matrices from shared memory; lane l gives the address of row l % 8 of
// matrix l / 8 and receives, of each matrix, row l / 4, columns 2 (l % 4) and 2 (l % 4) + 1
// (or, transposed, column l / 4 of rows 2 (l % 4) and 2 (l % 4) + 1).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const __nv_bfloat16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const __nv_bfloat16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

template <int D, int W, int BN, int MT> __device__ void flash_attention(const FlashParams &p) {
    const __nv_bfloat16 *q = p.q, *k = p.k, *v = p.v, *kp = p.kp, *vp = p.vp;
    __nv_bfloat16 *out = p.out;
    const uint32_t q_off = p.q_off, past = p.past;
    const float scale_log2 = p.scale_log2;
    const uint32_t q_si = p.q_strides.row, k_si = p.k_strides.row, p_si = p.past_row;
    const uint32_t o_sb = p.o_strides.batch, o_sh = p.o_strides.head, o_si = p.o_strides.row;
    // Two stages, each of BN key rows for k then BN for v (dynamic shared memory, 4 BN (D + 8)
    // values: smem_bytes in src/model/flash_tiles.rs): the next tile is copied in while this
    // one is used. Each warp owns MT groups of 16 query rows, so that every k and v fragment
    // read from shared memory feeds MT products.
    constexpr int WR = 16 * MT, BM = WR * W, KS = D + 8, CH = D / 8;
    // The q tile goes through the second stage first (2 BN rows), copied in with tile 0.
    static_assert(BM <= 2 * BN, "the q tile must fit a stage of keys and values");
    // Rows padded to D + 8 values so that the eight rows an ldmatrix reads fall in
    // different banks.
    extern __shared__ __align__(16) unsigned char smem[];
    __nv_bfloat16 *const sm = reinterpret_cast<__nv_bfloat16 *>(smem);
    auto k_stage = [&](int st) { return sm + st * 2 * BN * KS; };
    auto v_stage = [&](int st) { return sm + (st * 2 + 1) * BN * KS; };
    __nv_bfloat16 *const qs = k_stage(1);
    __shared__ uint32_t range[2];
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
    const FlashBlock fb = flash_block<BM>(p);
    const uint32_t b = fb.b, h = fb.h, m0 = fb.m0, end = fb.end;
    const uint64_t q_base = fb.q_base, k_base = fb.k_base, p_base = fb.p_base;

    block_keys<BM>(p, m0, end, range);
    // Rows at or past `end` are zeros.
    for (int c = tid; c < BM * CH; c += blockDim.x) {
        const int r = c / CH, d8 = (c % CH) * 8;
        const bool real = m0 + r < end;
        cp_async16(&qs[r * KS + d8], q + q_base + (uint64_t)(q_off + m0 + (real ? r : 0)) * q_si + d8, real);
    }
    cp_async_commit();
    __syncthreads();
    const uint32_t kmin = range[0], kmax = range[1];

    float o[MT][D / 8][4];
    float m_run[MT][2], l_run[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int n = 0; n < D / 8; ++n) o[mt][n][0] = o[mt][n][1] = o[mt][n][2] = o[mt][n][3] = 0.0f;
        m_run[mt][0] = m_run[mt][1] = -INFINITY;
        l_run[mt][0] = l_run[mt][1] = 0.0f;
    }

    // k and v rows kb .. kb + BN into stage `st`, the 16-byte chunks of a row on
    // neighbouring threads; rows at or past kmax are zeros.
    auto load_tile = [&](uint32_t kb, int st) {
        for (int c = tid; c < BN * CH; c += blockDim.x) {
            const int r = c / CH, d8 = (c % CH) * 8;
            const uint32_t j = kb + r;
            const bool real = j < kmax;
            const bool cached = real && j < past;
            const uint64_t at = cached ? p_base + (uint64_t)j * p_si : real ? k_base + (uint64_t)(j - past) * k_si : k_base;
            cp_async16(&k_stage(st)[r * KS + d8], (cached ? kp : k) + at + d8, real);
            cp_async16(&v_stage(st)[r * KS + d8], (cached ? vp : v) + at + d8, real);
        }
    };
    // Tile 0 is copied in while q is (zeros past kmax: nothing is read then), so that a block
    // of one tile (a window) waits for memory once; then q goes into registers.
    load_tile(kmin, 0);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    // Row and column this lane addresses in an ldmatrix of four 8x8 matrices.
    const int lrow = lane % 8, lmat = lane / 8;
    uint32_t qf[MT][D / 16][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int kc = 0; kc < D / 16; ++kc) {
            // matrices: rows 0-7 / cols 0-7, rows 8-15 / cols 0-7, rows 0-7 / cols 8-15, rows 8-15 / cols 8-15
            ldmatrix_x4(qf[mt][kc], &qs[(warp * WR + mt * 16 + (lmat % 2) * 8 + lrow) * KS + kc * 16 + (lmat / 2) * 8]);
        }
    }
    // Key ranges of this lane's rows: warp * WR + 16 mt + g + 8 x.
    uint32_t lo[MT][2], hi[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int x = 0; x < 2; ++x) row_keys(p, m0 + warp * WR + mt * 16 + g + 8 * x, end, lo[mt][x], hi[mt][x]);
    }
    // A tile outside the ranges of all of this warp's rows adds nothing (its probabilities
    // are zeros), so the warp skips it: the first rows of a causal block, the rows of a
    // block that spans two photos or windows.
    auto outside = [&](uint32_t kb) {
        bool yes = true;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
            for (int x = 0; x < 2; ++x) yes = yes && (kb + BN <= lo[mt][x] || kb >= hi[mt][x]);
        }
        return __all_sync(0xffffffff, yes);
    };
    // s = q k^T for this warp's rows and the keys of stage `st`, two key groups of 8 per
    // ldmatrix: matrices (keys n, dims lo), (keys n, dims hi), (keys n + 1, lo), (n + 1, hi).
    auto scores = [&](float (&s)[MT][BN / 8][4], int st) {
        const __nv_bfloat16 *kt = k_stage(st);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
            for (int n = 0; n < BN / 8; ++n) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.0f;
        }
#pragma unroll
        for (int n = 0; n < BN / 8; n += 2) {
#pragma unroll
            for (int kc = 0; kc < D / 16; ++kc) {
                uint32_t kf[4];
                ldmatrix_x4(kf, &kt[((n + lmat / 2) * 8 + lrow) * KS + kc * 16 + (lmat % 2) * 8]);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma_bf16_16816(s[mt][n], qf[mt][kc], kf[0], kf[1]);
                    mma_bf16_16816(s[mt][n + 1], qf[mt][kc], kf[2], kf[3]);
                }
            }
        }
    };
    // o of this warp's rows mt multiplied by the change of their maxima.
    auto rescale = [&](int mt, const float (&alpha)[2]) {
#pragma unroll
        for (int n = 0; n < D / 8; ++n) {
            o[mt][n][0] *= alpha[0];
            o[mt][n][1] *= alpha[0];
            o[mt][n][2] *= alpha[1];
            o[mt][n][3] *= alpha[1];
        }
    };
    // Whether keys kb .. kb + BN lie wholly inside every range of the warp's rows (most
    // tiles do): then the softmax skips the masking.
    auto within = [&](uint32_t kb) {
        bool yes = true;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
            for (int x = 0; x < 2; ++x) yes = yes && kb >= lo[mt][x] && kb + BN <= hi[mt][x];
        }
        return __all_sync(0xffffffff, yes);
    };
    // The scores s of keys kb .. kb + BN into probabilities; the rows' running maxima and
    // sums move on, and o is rescaled by the change of each row's maximum.
    auto softmax = [&](float (&s)[MT][BN / 8][4], uint32_t kb, bool inside) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            // Keys outside a row's range become -inf.
            float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
            for (int n = 0; n < BN / 8; ++n) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int x = e / 2;
                    if (!inside) {
                        const uint32_t j = kb + n * 8 + t4 * 2 + (e & 1);
                        if (j < lo[mt][x] || j >= hi[mt][x]) s[mt][n][e] = -INFINITY;
                    }
                    mx[x] = fmaxf(mx[x], s[mt][n][e]);
                }
            }
            float base[2], alpha[2];
#pragma unroll
            for (int x = 0; x < 2; ++x) {
                mx[x] = fmaxf(mx[x], __shfl_xor_sync(0xffffffff, mx[x], 1));
                mx[x] = fmaxf(mx[x], __shfl_xor_sync(0xffffffff, mx[x], 2));
                const float m_new = fmaxf(m_run[mt][x], mx[x] * scale_log2);
                base[x] = m_new == -INFINITY ? 0.0f : m_new;
                alpha[x] = exp2_ftz(m_run[mt][x] - base[x]);
                m_run[mt][x] = m_new;
                l_run[mt][x] *= alpha[x];
            }
            rescale(mt, alpha);
#pragma unroll
            for (int n = 0; n < BN / 8; ++n) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const float p = exp2_ftz(fmaf(s[mt][n][e], scale_log2, -base[e / 2]));
                    s[mt][n][e] = p;
                    l_run[mt][e / 2] += p;
                }
            }
        }
    };
    // o += p v: p from the score fragments, v of stage `st` through transposing ldmatrix:
    // matrices (keys lo, dims n), (keys hi, dims n), (keys lo, dims n + 1), (keys hi, dims n + 1).
    auto attend = [&](const float (&s)[MT][BN / 8][4], int st) {
        const __nv_bfloat16 *vt = v_stage(st);
#pragma unroll
        for (int kc = 0; kc < BN / 16; ++kc) {
            uint32_t a[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                a[mt][0] = pack_bf16(s[mt][2 * kc][0], s[mt][2 * kc][1]);
                a[mt][1] = pack_bf16(s[mt][2 * kc][2], s[mt][2 * kc][3]);
                a[mt][2] = pack_bf16(s[mt][2 * kc + 1][0], s[mt][2 * kc + 1][1]);
                a[mt][3] = pack_bf16(s[mt][2 * kc + 1][2], s[mt][2 * kc + 1][3]);
            }
#pragma unroll
            for (int n = 0; n < D / 8; n += 2) {
                uint32_t vf[4];
                ldmatrix_x4_trans(vf, &vt[(kc * 16 + (lmat % 2) * 8 + lrow) * KS + (n + lmat / 2) * 8]);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma_bf16_16816(o[mt][n], a[mt], vf[0], vf[1]);
                    mma_bf16_16816(o[mt][n + 1], a[mt], vf[2], vf[3]);
                }
            }
        }
    };

    // Every warp has its q before tile 1 takes the stage q came through.
    __syncthreads();
    int st = 0;
    for (uint32_t kb = kmin; kb < kmax; kb += BN, st ^= 1) {
        if (kb + BN < kmax) load_tile(kb + BN, st ^ 1);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        if (outside(kb)) {
            __syncthreads();
            continue;
        }
        const bool inside = within(kb);
        float s[MT][BN / 8][4];
        scores(s, st);
        softmax(s, kb, inside);
        attend(s, st);
        __syncthreads();
    }
    cp_async_wait<0>();

#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int x = 0; x < 2; ++x) {
            float l = l_run[mt][x];
            l += __shfl_xor_sync(0xffffffff, l, 1);
            l += __shfl_xor_sync(0xffffffff, l, 2);
            const uint32_t i = m0 + warp * WR + mt * 16 + g + 8 * x;
            if (i >= end) continue;
            const float inv = l > 0.0f ? 1.0f / l : 0.0f;
            __nv_bfloat16 *dst = out + (uint64_t)b * o_sb + (uint64_t)h * o_sh + (uint64_t)i * o_si;
#pragma unroll
            for (int n = 0; n < D / 8; ++n) {
                *reinterpret_cast<__nv_bfloat162 *>(&dst[n * 8 + t4 * 2]) =
                    __floats2bfloat162_rn(o[mt][n][2 * x] * inv, o[mt][n][2 * x + 1] * inv);
            }
        }
    }
}


// One kernel per head size and tiling: flash_attention_d{D}_w{W}_n{BN}_m{MT}, W warps of
// 16 MT query rows per block and key tiles of BN rows, at least MINB blocks resident on a
// multiprocessor (which caps the registers). src/model/flash_tiles.rs lists them.
#define FLASH(D, W, BN, MT, MINB)                                                                   \
    extern "C" __global__ void __launch_bounds__(32 * W, MINB)                                      \
        flash_attention_d##D##_w##W##_n##BN##_m##MT(const FlashParams p) {                          \
        flash_attention<D, W, BN, MT>(p);                                                           \
    }

FLASH(16, 4, 64, 1, 1)
FLASH(64, 4, 64, 1, 1)
FLASH(80, 4, 64, 1, 4)
FLASH(80, 4, 64, 2, 2)
FLASH(128, 4, 32, 1, 3)
// Measured and not compiled (docs/PERFORMANCE.md, "Flash tilings"; each kernel compiled costs
// time when the driver compiles the PTX at the first start): for heads of 80, 8 x 64 (the
// full blocks' tiling before warps of 32 rows: 3 207 against 3 000 us at a batch of eight)
// and 4 x 32 x 32; for heads of 128, 4 x 64, 8 x 32, 8 x 64 and 4 x 32 x 32 (466 against 393
// us: 255 registers and spills). Computing part of the softmax's exponentials on the FMA
// pipes (a cubic) instead of the special-function unit was slower at every share tried. So
// was a pipelined loop (three stages, each tile's scores computed one step ahead of its
// softmax so that the tensor cores and the other units work at once; docs/PERFORMANCE.md,
// "q copied with the first keys"): full blocks 3 463-3 966 us against 2 888, the text 405-416
// against 374.
