// What the flash-attention kernels share (flash_attention.cu for every GPU, flash_hopper.cu
// for Hopper's warpgroup products): their arguments and the copies into shared memory.
#pragma once
#include "common.cuh"

#include <stddef.h>

// Strides, in values, of a (batch, heads, rows, dim) view whose rows are contiguous.
struct Strides {
    uint32_t batch, head, row;
};

// The kernel's arguments as one struct passed by value, as FlashAttention passes its
// Flash_fwd_params. Its layout is fixed: src/model/cuda/flash_attention.rs declares the same struct
// (#[repr(C)], the same fields in the same order) and checks the same sizes and offsets.
struct FlashParams {
    const __nv_bfloat16 *q, *k, *v;  // queries, this call's keys and values
    const __nv_bfloat16 *kp, *vp;    // the cached prefix's keys and values (one batch)
    __nv_bfloat16 *out;
    const uint32_t *lo, *hi;         // per-query key ranges; null when causal (never read)
    uint32_t n_q, q_off, past, group;
    int32_t causal;
    float scale_log2;
    Strides q_strides, k_strides, o_strides;
    uint32_t past_head, past_row;    // strides of the cached prefix
    // Where each block's query rows start, one entry per block and one past the last block
    // (at most a block's rows apart), so that no block straddles two segments; null:
    // blocks of a block's rows each from row 0.
    const uint32_t *starts;
};
static_assert(sizeof(Strides) == 12, "Strides must match src/model/cuda/flash_attention.rs");
static_assert(offsetof(FlashParams, n_q) == 64, "FlashParams must match src/model/cuda/flash_attention.rs");
static_assert(offsetof(FlashParams, q_strides) == 88, "FlashParams must match src/model/cuda/flash_attention.rs");
static_assert(offsetof(FlashParams, past_head) == 124, "FlashParams must match src/model/cuda/flash_attention.rs");
static_assert(offsetof(FlashParams, starts) == 136, "FlashParams must match src/model/cuda/flash_attention.rs");
static_assert(sizeof(FlashParams) == 144, "FlashParams must match src/model/cuda/flash_attention.rs");

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}

// 2^x in one instruction, results below 2^-126 flushed to zero: exp2f also handles those
// (three more instructions per score), and such probabilities are nothing beside a row's
// largest, 1, once rounded to bf16 and summed.
__device__ __forceinline__ float exp2_ftz(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

__device__ __forceinline__ uint32_t smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

// 16 bytes from global to shared memory without passing through registers; zeros when
// `real` is false (nothing is read then).
__device__ __forceinline__ void cp_async16(void *dst, const void *src, bool real) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(real ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// The query rows block `tile` owns, m0 .. end (exclusive): from the table of starts where
// there is one, else BM rows from tile * BM; never past n_q.
template <int BM> __device__ __forceinline__ void block_rows(const FlashParams &p, uint32_t tile, uint32_t &m0, uint32_t &end) {
    if (p.starts) {
        m0 = p.starts[tile];
        end = min(p.starts[tile + 1], p.n_q);
    } else {
        m0 = tile * BM;
        end = min(m0 + BM, p.n_q);
    }
}

// Where one block's work lies: batch b, head h, query rows m0 .. end (exclusive), and the
// offsets, in values, of its batch and head in q (and out's batch and head, by o_strides),
// of its key head in k and v, and in the cached prefix.
struct FlashBlock {
    uint32_t b, h, m0, end;
    uint64_t q_base, k_base, p_base;
};

// This block's FlashBlock, for blocks of BM query rows. Causal blocks of later queries see
// more keys: they start first, so that the short ones fill the end of the grid.
template <int BM> __device__ __forceinline__ FlashBlock flash_block(const FlashParams &p) {
    FlashBlock fb;
    const uint32_t tile = p.causal ? gridDim.x - 1 - blockIdx.x : blockIdx.x;
    fb.b = blockIdx.z;
    fb.h = blockIdx.y;
    block_rows<BM>(p, tile, fb.m0, fb.end);
    const uint32_t kvh = fb.h / p.group;
    fb.q_base = (uint64_t)fb.b * p.q_strides.batch + (uint64_t)fb.h * p.q_strides.head;
    fb.k_base = (uint64_t)fb.b * p.k_strides.batch + (uint64_t)kvh * p.k_strides.head;
    fb.p_base = (uint64_t)kvh * p.past_head;
    return fb;
}

// The keys query row i sees, lo .. hi (exclusive); none for rows at or past `end` (the
// block's last row).
__device__ __forceinline__ void row_keys(const FlashParams &p, uint32_t i, uint32_t end, uint32_t &lo, uint32_t &hi) {
    if (i >= end) {
        lo = hi = 0;
    } else if (p.causal) {
        lo = 0;
        hi = p.past + p.q_off + i + 1;
    } else {
        lo = p.lo[i];
        hi = p.hi[i];
    }
}

// The keys any of the block's rows m0 .. end (at most ROWS) sees, into range[0] .. range[1]
// (shared). Every thread of the block calls it; read range only after a barrier.
template <int ROWS> __device__ void block_keys(const FlashParams &p, uint32_t m0, uint32_t end, uint32_t *range) {
    if (threadIdx.x == 0) {
        range[0] = 0xffffffffu;
        range[1] = 0;
    }
    __syncthreads();
    for (uint32_t r = threadIdx.x; r < ROWS && m0 + r < end; r += blockDim.x) {
        uint32_t lo, hi;
        row_keys(p, m0 + r, end, lo, hi);
        atomicMin(&range[0], lo);
        atomicMax(&range[1], hi);
    }
}
