// Attention with Hopper's warpgroup products (wgmma.mma_async): the same arguments and the
// same arithmetic as flash_attention.cu (FlashAttention-2's online softmax in f32, exp2 of
// scores pre-multiplied by scale * log2(e), probabilities rounded to bf16 for the product
// with v), but the two products of each key tile are issued by a whole warpgroup (four
// warps, 64 query rows) from shared memory, where the mma.sync kernel feeds the tensor cores
// 16 x 8 x 16 at a time from registers. Only for sm_90a: built for any other target this file
// holds no kernel, and src/model/cuda/flash_attention.rs runs the mma.sync kernel instead.
// It runs the vision tower's full blocks (four warpgroups, 24 % faster there than the
// mma.sync kernel); for the language model's causal attention it is still slower, and runs
// only where LYCHEE_FLASH_TILES names it (docs/PERFORMANCE.md, "The warpgroup kernel's
// products unserialized").
//
// One block of G warpgroups per (64 G query rows, head, batch). q, and three stages of BN key
// and value rows, sit in shared memory in the layout the products read without swizzling:
// "core matrices" of 8 rows x 8 values (128 contiguous bytes), row r and values 8c..8c+7
// of a tile at ((r / 8) * D / 8 + c) * 64 + (r % 8) * 8. Then
//   s = q k^T: both K-major (the dims contiguous), core matrices 128 bytes apart along the
//              dims (leading byte offset) and D * 16 bytes apart along the rows (stride);
//   o += p v:  p from registers (the accumulators of s, rounded, are already the fragments
//              it needs), v MN-major (the rows of v as they are): core matrices D * 16
//              bytes apart along the keys (leading) and 128 along the dims (stride).
// Each warp of a warpgroup owns 16 of its rows and holds them as mma.sync's m16n8 fragments,
// so the softmax below is flash_attention.cu's, for one group of 16 rows.
#include "flash.cuh"

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#include "wgmma.cuh"

// Offset, in values, of row r and values 8c..8c+7 in a tile of rows of 8 CH values.
template <int CH> __device__ __forceinline__ uint32_t core_at(uint32_t r, uint32_t c) { return ((r / 8) * CH + c) * 64 + (r % 8) * 8; }

// A shared-memory matrix descriptor without swizzling: start, leading and stride byte offsets.
__device__ __forceinline__ uint64_t smem_desc(const __nv_bfloat16 *p, uint32_t lbo, uint32_t sbo) {
    return (uint64_t)((smem_addr(p) & 0x3FFFF) >> 4) | ((uint64_t)(lbo >> 4) << 16) | ((uint64_t)(sbo >> 4) << 32);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits until at most N groups of products are in flight, with the accumulators `acc` of
// the group waited for kept from moving across the wait.
template <int N, typename Acc> __device__ __forceinline__ void wgmma_wait(Acc &acc) {
    wgmma_fence_operands(acc);
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
    wgmma_fence_operands(acc);
}
// Writes of the generic proxy (cp.async here) made visible to the products' reads.
__device__ __forceinline__ void fence_async_shared() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

template <int BN> __device__ __forceinline__ void wgmma_s(float (&s)[BN / 8][4], uint64_t a, uint64_t b, int acc);
template <> __device__ __forceinline__ void wgmma_s<64>(float (&s)[8][4], uint64_t a, uint64_t b, int acc) { wgmma_ss_n64(s, a, b, acc); }
template <> __device__ __forceinline__ void wgmma_s<128>(float (&s)[16][4], uint64_t a, uint64_t b, int acc) { wgmma_ss_n128(s, a, b, acc); }
template <int D> __device__ __forceinline__ void wgmma_o(float (&o)[D / 8][4], const uint32_t (&a)[4], uint64_t b);
template <> __device__ __forceinline__ void wgmma_o<80>(float (&o)[10][4], const uint32_t (&a)[4], uint64_t b) { wgmma_rs_n80(o, a, b, 1); }
template <> __device__ __forceinline__ void wgmma_o<128>(float (&o)[16][4], const uint32_t (&a)[4], uint64_t b) { wgmma_rs_n128(o, a, b, 1); }

// A compile-time choice passed to a generic lambda.
template <bool B> struct Masked {
    static constexpr bool value = B;
};

// Stages of key and value tiles: tile t + 2 is copied in while tile t + 1's scores and tile
// t's product with v are computed.
constexpr int STAGES = 3;

// The tiles of a block, in turn (the loop below): the products of tile t with v and of q
// with tile t + 1's keys are issued together, one group each, and run on the tensor cores
// back to back:
//   p(t) ready -> issue s(t + 1) = q k(t + 1)^T and o += p(t) v(t) -> wait for s(t + 1) ->
//   its softmax -> wait for o -> o *= the change of each row's maximum -> p(t + 1).
// As written, the softmax would overlap the product with v; ptxas moves the second wait up
// to the first, so the softmax of a warpgroup overlaps the products of the block's other
// warpgroups instead.
template <int D, int BN, int G> __device__ void flash_wgmma(const FlashParams &p) {
    const __nv_bfloat16 *q = p.q, *k = p.k, *v = p.v, *kp = p.kp, *vp = p.vp;
    __nv_bfloat16 *out = p.out;
    const uint32_t q_off = p.q_off, past = p.past;
    const float scale_log2 = p.scale_log2;
    const uint32_t q_si = p.q_strides.row, k_si = p.k_strides.row, p_si = p.past_row;
    const uint32_t o_sb = p.o_strides.batch, o_sh = p.o_strides.head, o_si = p.o_strides.row;
    constexpr int CH = D / 8, BM = 64 * G, NT = 128 * G;
    // q (BM rows), then STAGES tiles of BN rows of k and of v: (BM + 2 STAGES BN) D values
    // (smem_bytes in src/model/flash_tiles.rs).
    extern __shared__ __align__(128) unsigned char smem[];
    __nv_bfloat16 *qs = reinterpret_cast<__nv_bfloat16 *>(smem);
    __nv_bfloat16 *ks = qs + BM * D;
    __nv_bfloat16 *vs = ks + STAGES * BN * D;
    __shared__ uint32_t range[2];
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
    const int wg = warp / 4;
    const FlashBlock fb = flash_block<BM>(p);
    const uint32_t b = fb.b, h = fb.h, m0 = fb.m0, end = fb.end;
    const uint64_t q_base = fb.q_base, k_base = fb.k_base, p_base = fb.p_base;

    block_keys<BM>(p, m0, end, range);
    // The 16-byte chunk c of a tile: row (c / 8 CH) * 8 + c % 8, values 8 ((c / 8) % CH), so
    // that eight neighbouring threads fill one core matrix (128 contiguous bytes).
    for (int c = tid; c < BM * CH; c += NT) {
        const uint32_t r = (c / (8 * CH)) * 8 + c % 8, d8 = (c / 8) % CH;
        const bool real = m0 + r < end;
        cp_async16(&qs[core_at<CH>(r, d8)], q + q_base + (uint64_t)(q_off + m0 + (real ? r : 0)) * q_si + d8 * 8, real);
    }
    __syncthreads();
    const uint32_t kmin = range[0], kmax = range[1];
    const int tiles = kmax > kmin ? (kmax - kmin + BN - 1) / BN : 0;

    // This thread's rows: wg * 64 + (warp % 4) * 16 + g + 8 x.
    const uint32_t row0 = m0 + wg * 64 + (warp % 4) * 16 + g;
    uint32_t lo[2], hi[2];
#pragma unroll
    for (int x = 0; x < 2; ++x) row_keys(p, row0 + 8 * x, end, lo[x], hi[x]);

    // k and v rows of tile t into its stage; rows at or past kmax are zeros.
    auto load_tile = [&](int t) {
        const uint32_t kb = kmin + t * BN;
        const int st = t % STAGES;
        for (int c = tid; c < BN * CH; c += NT) {
            const uint32_t r = (c / (8 * CH)) * 8 + c % 8, d8 = (c / 8) % CH;
            const uint32_t j = kb + r;
            const bool real = j < kmax;
            const bool cached = real && j < past;
            const uint64_t at = cached ? p_base + (uint64_t)j * p_si : real ? k_base + (uint64_t)(j - past) * k_si : k_base;
            const uint32_t to = st * BN * D + core_at<CH>(r, d8);
            cp_async16(&ks[to], (cached ? kp : k) + at + d8 * 8, real);
            cp_async16(&vs[to], (cached ? vp : v) + at + d8 * 8, real);
        }
    };
    if (tiles > 0) load_tile(0);
    cp_async_commit();  // with q
    if (tiles > 1) load_tile(1);
    cp_async_commit();

    const __nv_bfloat16 *q_wg = qs + wg * 64 * D;
    float o[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};
    float s[BN / 8][4];
    uint32_t a[BN / 16][4];

    // s = q k(t)^T, issued and committed (not waited for).
    auto issue_scores = [&](int t) {
        const __nv_bfloat16 *kt = ks + (t % STAGES) * BN * D;
#pragma unroll
        for (int kc = 0; kc < D / 16; ++kc) {
            wgmma_s<BN>(s, smem_desc(q_wg + kc * 128, 128, CH * 128), smem_desc(kt + kc * 128, 128, CH * 128), kc > 0);
        }
        wgmma_commit();
    };
    // Whether every key of tile t is in range for this thread's rows (rows past the end
    // count as inside: nothing of theirs is written).
    auto tile_inside = [&](int t) {
        const uint32_t kb = kmin + t * BN;
        bool inside = true;
#pragma unroll
        for (int x = 0; x < 2; ++x) inside = inside && (row0 + 8 * x >= end || (kb >= lo[x] && kb + BN <= hi[x]));
        return inside;
    };
    // The softmax of s (tile t's scores, in f32) into probabilities in s; the rows' running
    // maxima and sums move on, and `alpha` is what o must be multiplied by. Keys outside a
    // row's range become -inf where `masked` (a Masked<bool>, decided for the whole block, so
    // that the products around the softmax are never on a path only some warps take).
    auto softmax = [&](int t, float (&alpha)[2], auto masked) {
        const uint32_t kb = kmin + t * BN;
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int n = 0; n < BN / 8; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int x = e / 2;
                if constexpr (decltype(masked)::value) {
                    const uint32_t j = kb + n * 8 + t4 * 2 + (e & 1);
                    s[n][e] = j < lo[x] || j >= hi[x] ? -INFINITY : s[n][e];
                }
                mx[x] = fmaxf(mx[x], s[n][e]);
            }
        }
        float base[2];
#pragma unroll
        for (int x = 0; x < 2; ++x) {
            mx[x] = fmaxf(mx[x], __shfl_xor_sync(0xffffffff, mx[x], 1));
            mx[x] = fmaxf(mx[x], __shfl_xor_sync(0xffffffff, mx[x], 2));
            const float m_new = fmaxf(m_run[x], mx[x] * scale_log2);
            base[x] = m_new == -INFINITY ? 0.0f : m_new;
            alpha[x] = exp2_ftz(m_run[x] - base[x]);
            m_run[x] = m_new;
            l_run[x] *= alpha[x];
        }
#pragma unroll
        for (int n = 0; n < BN / 8; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float pr = exp2_ftz(fmaf(s[n][e], scale_log2, -base[e / 2]));
                s[n][e] = pr;
                l_run[e / 2] += pr;
            }
        }
    };
    auto pack = [&]() {
#pragma unroll
        for (int kc = 0; kc < BN / 16; ++kc) {
            a[kc][0] = pack_bf16(s[2 * kc][0], s[2 * kc][1]);
            a[kc][1] = pack_bf16(s[2 * kc][2], s[2 * kc][3]);
            a[kc][2] = pack_bf16(s[2 * kc + 1][0], s[2 * kc + 1][1]);
            a[kc][3] = pack_bf16(s[2 * kc + 1][2], s[2 * kc + 1][3]);
        }
    };

    if (tiles > 0) {
        cp_async_wait<1>();  // q and tile 0
        fence_async_shared();
        const bool inside = __syncthreads_and(tile_inside(0));
        wgmma_fence();
        issue_scores(0);
        wgmma_wait<0>(s);
        float alpha[2];
        if (inside) softmax(0, alpha, Masked<false>{});
        else softmax(0, alpha, Masked<true>{});
        pack();
    }
    // o += p(t) v(t), issued and committed (not waited for).
    auto issue_values = [&](int t) {
        const __nv_bfloat16 *vt = vs + (t % STAGES) * BN * D;
#pragma unroll
        for (int kc = 0; kc < BN / 16; ++kc) {
            // 16 keys (two core matrices along the keys) per product.
            wgmma_o<D>(o, a[kc], smem_desc(vt + kc * CH * 128, CH * 128, 128));
        }
        wgmma_commit();
    };
    // Tile t + 1's scores and tile t's product with v issued together, then the softmax of
    // t + 1, then o rescaled. No product is issued under a condition and the softmax has no
    // branch: with a condition ptxas serializes the products (C7514 of -Xptxas -v). ptxas
    // still moves the wait for the product with v up to the wait for the scores, so the
    // softmax overlaps other warpgroups' products only (docs/PERFORMANCE.md).
    auto step = [&](int t, auto masked) {
        wgmma_fence();
        issue_scores(t + 1);
        issue_values(t);
        float alpha[2];
        wgmma_wait<1>(s);
        softmax(t + 1, alpha, masked);
        wgmma_wait<0>(o);
#pragma unroll
        for (int n = 0; n < D / 8; ++n) {
            o[n][0] *= alpha[0];
            o[n][1] *= alpha[0];
            o[n][2] *= alpha[1];
            o[n][3] *= alpha[1];
        }
        pack();
    };
    for (int t = 0; t + 1 < tiles; ++t) {
        // Tile t + 1 has landed, and every warp is done with tile t - 1, whose stage tile
        // t + 2 now takes. The barrier also tells every warp whether tile t + 1 needs masks
        // for any row of the block, so that a warpgroup's warps take the same code.
        cp_async_wait<0>();
        fence_async_shared();
        const bool inside = __syncthreads_and(tile_inside(t + 1));
        if (t + 2 < tiles) load_tile(t + 2);
        cp_async_commit();
        if (inside) step(t, Masked<false>{});
        else step(t, Masked<true>{});
    }
    // The last tile: its keys landed before its scores were issued.
    if (tiles > 0) {
        wgmma_fence();
        issue_values(tiles - 1);
        wgmma_wait<0>(o);
    }
    cp_async_wait<0>();

#pragma unroll
    for (int x = 0; x < 2; ++x) {
        float l = l_run[x];
        l += __shfl_xor_sync(0xffffffff, l, 1);
        l += __shfl_xor_sync(0xffffffff, l, 2);
        const uint32_t i = row0 + 8 * x;
        if (i >= end) continue;
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
        __nv_bfloat16 *dst = out + (uint64_t)b * o_sb + (uint64_t)h * o_sh + (uint64_t)i * o_si;
#pragma unroll
        for (int n = 0; n < D / 8; ++n) {
            *reinterpret_cast<__nv_bfloat162 *>(&dst[n * 8 + t4 * 2]) = __floats2bfloat162_rn(o[n][2 * x] * inv, o[n][2 * x + 1] * inv);
        }
    }
}

// One kernel per head size and tiling: flash_wgmma_d{D}_g{G}_n{BN}, G warpgroups of 64
// query rows per block and key tiles of BN rows, at least MINB blocks resident on a
// multiprocessor. src/model/flash_tiles.rs lists them.
#define FLASH_WGMMA(D, G, BN, MINB)                                                                 \
    extern "C" __global__ void __launch_bounds__(128 * G, MINB)                                     \
        flash_wgmma_d##D##_g##G##_n##BN(const FlashParams p) {                                      \
        flash_wgmma<D, BN, G>(p);                                                                   \
    }
#else
#define FLASH_WGMMA(D, G, BN, MINB)
#endif

FLASH_WGMMA(80, 3, 64, 1)
FLASH_WGMMA(80, 4, 64, 1)
FLASH_WGMMA(128, 3, 64, 1)
// Measured and not compiled (docs/PERFORMANCE.md, "Hopper's warpgroup products" and "The
// warpgroup kernel's products unserialized"): for heads of 80, 4 x 64, 8 x 64 and 8 x 128
// (3 749, 2 405 and 2 925 against 2 010 us for 16 x 64 at a batch of eight, blocks by
// photo); for heads of 128, 4 x 64 and 8 x 64 (585-593 and 406 against 374 us); q held in
// registers.
