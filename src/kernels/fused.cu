// Fused elementwise kernels for the model's hot paths on CUDA. candle runs each of these
// steps as separate, strided kernels (a broadcast add alone reached 260 GB/s of the H100's
// 3 TB/s); fused, each is one pass over memory. All arithmetic is in f32; values are
// stored in the tensor's type (bf16 or f32).
#include <cuda_bf16.h>
#include <stdint.h>

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16(x); }

// Element counts are below 2^32 (the caller checks), so indices are 32-bit.

// out[r, c] = x[r, c] + bias[c] for a row-major (rows, cols) x.
template <typename T>
__device__ void bias_add(const T *x, const T *bias, T *out, uint32_t rows, uint32_t cols) {
    const uint32_t n = rows * cols;
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        out[i] = from_f<T>(to_f(x[i]) + to_f(bias[i % cols]));
    }
}

// out = silu(gate) * up, elementwise.
template <typename T>
__device__ void swiglu(const T *gate, const T *up, T *out, uint32_t n) {
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const float g = to_f(gate[i]);
        out[i] = from_f<T>(g / (1.0f + __expf(-g)) * to_f(up[i]));
    }
}

// Row softmax of scale * x over the first `valid` columns; the rest of the row becomes 0.
// One block per row. Which columns are valid:
//   mode 0: all of them;
//   mode 1: causal with an offset: row r is query (r % q_len), which sees keys 0 ..= past + query;
//   mode 2: per segment: row r belongs to segment r / rows_per_segment, which has
//           lengths[segment] real keys (the rest is padding).
template <typename T>
__device__ void softmax_rows(const T *x, T *out, uint32_t cols, float scale, int mode,
                             uint32_t q_len, uint32_t past, const uint32_t *lengths, uint32_t rows_per_segment) {
    const uint64_t row = blockIdx.x;
    const T *in = x + row * cols;
    T *dst = out + row * cols;
    uint32_t valid = cols;
    if (mode == 1) {
        valid = min(cols, past + (uint32_t)(row % q_len) + 1);
    } else if (mode == 2) {
        valid = min(cols, lengths[row / rows_per_segment]);
    }
    __shared__ float shared[32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;

    float m = -INFINITY;
    for (uint32_t c = threadIdx.x; c < valid; c += blockDim.x) m = fmaxf(m, to_f(in[c]) * scale);
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, o));
    if (lane == 0) shared[warp] = m;
    __syncthreads();
    m = lane < warps ? shared[lane] : -INFINITY;
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, o));
    __syncthreads();

    float s = 0.0f;
    for (uint32_t c = threadIdx.x; c < valid; c += blockDim.x) s += __expf(to_f(in[c]) * scale - m);
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffff, s, o);
    if (lane == 0) shared[warp] = s;
    __syncthreads();
    s = lane < warps ? shared[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffff, s, o);
    const float inv = 1.0f / s;

    for (uint32_t c = threadIdx.x; c < cols; c += blockDim.x) {
        dst[c] = from_f<T>(c < valid ? __expf(to_f(in[c]) * scale - m) * inv : 0.0f);
    }
}

// Rotate-half rotary embedding of x laid out (rows, heads, dim) with f32 cos/sin tables
// (rows, dim / 2), computed in f32 (as transformers does for the vision tower).
template <typename T>
__device__ void rope_rows(const T *x, const float *cos, const float *sin, T *out, uint32_t rows, uint32_t heads, uint32_t dim) {
    const uint32_t half = dim / 2;
    const uint32_t n = rows * heads * half;
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const uint32_t d = i % half;
        const uint32_t rh = i / half;
        const uint32_t r = rh / heads;
        const uint32_t base = rh * dim;
        const float c = cos[r * half + d], s = sin[r * half + d];
        const float a = to_f(x[base + d]), b = to_f(x[base + d + half]);
        out[base + d] = from_f<T>(a * c - b * s);
        out[base + d + half] = from_f<T>(b * c + a * s);
    }
}

// Attention within short segments of rows (the vision tower's windows), one block per
// (segment, head): q, k, v and out are (rows, heads, dim) row-major; segment s covers rows
// bounds[s] .. bounds[s + 1], at most max_len of them. The segment's q, k, v sit in shared
// memory in T, each row padded to `stride` values so that the rows threads read at once
// fall in different banks; scores, softmax and sums are f32. Dynamic shared memory holds
// max_len * max_len floats and 3 * max_len * stride values of T.
template <typename T>
__device__ void segment_attention(const T *q, const T *k, const T *v, T *out, const uint32_t *bounds,
                                  uint32_t heads, uint32_t dim, uint32_t stride, uint32_t max_len, float scale) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const uint32_t seg = blockIdx.x, h = blockIdx.y;
    const uint32_t start = bounds[seg], len = bounds[seg + 1] - start;
    float *scores = reinterpret_cast<float *>(smem_raw);
    T *qs = reinterpret_cast<T *>(scores + max_len * max_len);
    T *ks = qs + max_len * stride;
    T *vs = ks + max_len * stride;
    for (uint32_t i = threadIdx.x; i < len * dim; i += blockDim.x) {
        const uint32_t r = i / dim, d = i - r * dim;
        const uint32_t g = ((start + r) * heads + h) * dim + d;
        qs[r * stride + d] = q[g];
        ks[r * stride + d] = k[g];
        vs[r * stride + d] = v[g];
    }
    __syncthreads();
    for (uint32_t i = threadIdx.x; i < len * len; i += blockDim.x) {
        const uint32_t a = i / len, b = i - a * len;
        const T *qa = qs + a * stride, *kb = ks + b * stride;
        float acc = 0.0f;
        for (uint32_t d = 0; d < dim; ++d) acc += to_f(qa[d]) * to_f(kb[d]);
        scores[a * len + b] = acc * scale;
    }
    __syncthreads();
    const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    for (uint32_t r = warp; r < len; r += warps) {
        float *row = scores + r * len;
        float m = -INFINITY;
        for (uint32_t c = lane; c < len; c += 32) m = fmaxf(m, row[c]);
        for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, o));
        float sum = 0.0f;
        for (uint32_t c = lane; c < len; c += 32) {
            const float e = __expf(row[c] - m);
            row[c] = e;
            sum += e;
        }
        for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffff, sum, o);
        const float inv = 1.0f / sum;
        for (uint32_t c = lane; c < len; c += 32) row[c] *= inv;
    }
    __syncthreads();
    for (uint32_t i = threadIdx.x; i < len * dim; i += blockDim.x) {
        const uint32_t r = i / dim, d = i - r * dim;
        const float *p = scores + r * len;
        float acc = 0.0f;
        for (uint32_t j = 0; j < len; ++j) acc += p[j] * to_f(vs[j * stride + d]);
        out[((start + r) * heads + h) * dim + d] = from_f<T>(acc);
    }
}

// The epilogue of a fused q/k/v projection. Each row of `x` holds q (q_heads * dim), then
// k and v (kv_heads * dim each), before bias. Writes q, k, v with their biases added and
// rotary applied to q and k (rotate-half, f32 math, tables (rows, dim / 2) f32), laid out
// either (rows, heads, dim) or, when seq > 0, (rows / seq, heads, seq, dim). One thread per
// pair of dimensions (d, d + dim / 2).
template <typename T>
__device__ void qkv_epilogue(const T *x, const T *bias, const float *cos, const float *sin, T *q, T *k, T *v,
                             uint32_t rows, uint32_t q_heads, uint32_t kv_heads, uint32_t dim, uint32_t seq) {
    const uint32_t half = dim / 2;
    const uint32_t heads = q_heads + 2 * kv_heads;
    const uint32_t width = heads * dim;
    const uint32_t n = rows * heads * half;
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const uint32_t d = i % half;
        const uint32_t rh = i / half;
        const uint32_t h = rh % heads;
        const uint32_t r = rh / heads;
        const uint32_t col = h * dim + d;
        float a = to_f(x[r * width + col]) + to_f(bias[col]);
        float b = to_f(x[r * width + col + half]) + to_f(bias[col + half]);
        T *dst;
        uint32_t hh, nh;
        if (h < q_heads) {
            dst = q; hh = h; nh = q_heads;
        } else if (h < q_heads + kv_heads) {
            dst = k; hh = h - q_heads; nh = kv_heads;
        } else {
            dst = v; hh = h - q_heads - kv_heads; nh = kv_heads;
        }
        if (h < q_heads + kv_heads) {
            const float c = cos[r * half + d], s = sin[r * half + d];
            const float ra = a * c - b * s, rb = b * c + a * s;
            a = ra;
            b = rb;
        }
        const uint32_t base = seq > 0 ? (((r / seq) * nh + hh) * seq + r % seq) * dim : (r * nh + hh) * dim;
        dst[base + d] = from_f<T>(a);
        dst[base + d + half] = from_f<T>(b);
    }
}

// out = silu(x[:, :n] + bias[:n]) * (x[:, n:] + bias[n:]) for x (rows, 2n).
template <typename T>
__device__ void bias_swiglu(const T *x, const T *bias, T *out, uint32_t rows, uint32_t n) {
    const uint32_t total = rows * n;
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const uint32_t r = i / n, c = i - r * n;
        const float g = to_f(x[r * 2 * n + c]) + to_f(bias[c]);
        const float u = to_f(x[r * 2 * n + n + c]) + to_f(bias[n + c]);
        out[i] = from_f<T>(g / (1.0f + __expf(-g)) * u);
    }
}

// out = residual + x + bias (bias over columns), x and residual (rows, cols).
template <typename T>
__device__ void bias_residual(const T *x, const T *bias, const T *residual, T *out, uint32_t rows, uint32_t cols) {
    const uint32_t n = rows * cols;
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        out[i] = from_f<T>(to_f(residual[i]) + (to_f(x[i]) + to_f(bias[i % cols])));
    }
}

// Attention without materialized scores (FlashAttention-2's scheme) for bf16 q, k, v with
// tensor cores (mma.sync m16n8k16, f32 accumulation). One block of 4 warps per (64 query
// rows, head, batch); each warp owns 16 query rows and walks the keys 64 at a time with an
// online softmax in f32 (exp2 of scores pre-multiplied by scale * log2(e)). The probabilities
// are rounded to bf16 for the product with v, as fused attention in PyTorch does.
//
// Element (b, h, i, d) of q is q[b * q_sb + h * q_sh + i * q_si + d], likewise for out; key
// j < past comes from kp / vp (one batch, strides p_sh, p_si: a cached prefix), key
// j >= past from k / v at row j - past. Query head h reads key head h / group. Query i is
// row q_off + i; which keys it sees:
//   causal: 0 .. past + q_off + i (inclusive);
//   else:   lo[i] .. hi[i] (exclusive), from per-row tables (segments, windows).
// Rows and keys are 16-byte aligned: strides and offsets are multiples of 8 values.
__device__ __forceinline__ void mma_bf16_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}

__device__ __forceinline__ uint32_t smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

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

// 16 bytes from global to shared memory without passing through registers; zeros when
// `real` is false (nothing is read then).
__device__ __forceinline__ void cp_async16(void *dst, const void *src, bool real) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(real ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

template <int D>
__device__ void flash_attention(const __nv_bfloat16 *q, const __nv_bfloat16 *k, const __nv_bfloat16 *v,
                                const __nv_bfloat16 *kp, const __nv_bfloat16 *vp, __nv_bfloat16 *out,
                                const uint32_t *lo_rows, const uint32_t *hi_rows, uint32_t n_q, uint32_t q_off,
                                uint32_t past, uint32_t group, int causal, float scale_log2, uint32_t q_sb,
                                uint32_t q_sh, uint32_t q_si, uint32_t k_sb, uint32_t k_sh, uint32_t k_si,
                                uint32_t p_sh, uint32_t p_si, uint32_t o_sb, uint32_t o_sh, uint32_t o_si) {
    // Key tiles of 64 rows, 32 for the widest heads, so that two stages of k and v stay
    // within 48 KiB of shared memory: the next tile is copied in while this one is used.
    constexpr int BM = 64, BN = D > 80 ? 32 : 64, KS = D + 8, CH = D / 8;
    // Rows padded to D + 8 values so that the eight rows an ldmatrix reads fall in
    // different banks. The q tile goes through ks first (2 * BN >= BM rows).
    __shared__ __align__(16) __nv_bfloat16 ks[2 * BN * KS];
    __shared__ __align__(16) __nv_bfloat16 vs[2 * BN * KS];
    __shared__ uint32_t range[2];
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
    // Causal blocks of later queries see more keys: they start first, so that the short
    // ones fill the end of the grid.
    const uint32_t tile = causal ? gridDim.x - 1 - blockIdx.x : blockIdx.x;
    const uint32_t b = blockIdx.z, h = blockIdx.y, m0 = tile * BM;
    const uint32_t kvh = h / group;
    const uint64_t q_base = (uint64_t)b * q_sb + (uint64_t)h * q_sh;
    const uint64_t k_base = (uint64_t)b * k_sb + (uint64_t)kvh * k_sh;
    const uint64_t p_base = (uint64_t)kvh * p_sh;

    if (tid == 0) {
        range[0] = 0xffffffffu;
        range[1] = 0;
    }
    __syncthreads();
    if (tid < BM && m0 + tid < n_q) {
        const uint32_t i = m0 + tid;
        atomicMin(&range[0], causal ? 0u : lo_rows[i]);
        atomicMax(&range[1], causal ? past + q_off + i + 1 : hi_rows[i]);
    }
    for (int c = tid; c < BM * CH; c += blockDim.x) {
        const int r = c / CH, d8 = (c % CH) * 8;
        uint4 val = make_uint4(0, 0, 0, 0);
        if (m0 + r < n_q) val = *reinterpret_cast<const uint4 *>(q + q_base + (uint64_t)(q_off + m0 + r) * q_si + d8);
        *reinterpret_cast<uint4 *>(&ks[r * KS + d8]) = val;
    }
    __syncthreads();

    // Row and column this lane addresses in an ldmatrix of four 8x8 matrices.
    const int lrow = lane % 8, lmat = lane / 8;
    const int r0 = warp * 16 + g;
    uint32_t qf[D / 16][4];
#pragma unroll
    for (int kc = 0; kc < D / 16; ++kc) {
        // matrices: rows 0-7 / cols 0-7, rows 8-15 / cols 0-7, rows 0-7 / cols 8-15, rows 8-15 / cols 8-15
        ldmatrix_x4(qf[kc], &ks[(warp * 16 + (lmat % 2) * 8 + lrow) * KS + kc * 16 + (lmat / 2) * 8]);
    }
    uint32_t lo[2], hi[2];
#pragma unroll
    for (int x = 0; x < 2; ++x) {
        const uint32_t i = m0 + r0 + 8 * x;
        if (i >= n_q) {
            lo[x] = hi[x] = 0;
        } else if (causal) {
            lo[x] = 0;
            hi[x] = past + q_off + i + 1;
        } else {
            lo[x] = lo_rows[i];
            hi[x] = hi_rows[i];
        }
    }
    const uint32_t kmin = range[0], kmax = range[1];
    __syncthreads();

    float o[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};

    // k and v rows kb .. kb + BN into stage `st`, the 16-byte chunks of a row on
    // neighbouring threads; rows at or past kmax are zeros.
    auto load_tile = [&](uint32_t kb, int st) {
        for (int c = tid; c < BN * CH; c += blockDim.x) {
            const int r = c / CH, d8 = (c % CH) * 8;
            const uint32_t j = kb + r;
            const bool real = j < kmax;
            const bool cached = real && j < past;
            const uint64_t at = cached ? p_base + (uint64_t)j * p_si : real ? k_base + (uint64_t)(j - past) * k_si : k_base;
            cp_async16(&ks[(st * BN + r) * KS + d8], (cached ? kp : k) + at + d8, real);
            cp_async16(&vs[(st * BN + r) * KS + d8], (cached ? vp : v) + at + d8, real);
        }
    };
    load_tile(kmin, 0);
    cp_async_commit();
    int st = 0;
    for (uint32_t kb = kmin; kb < kmax; kb += BN, st ^= 1) {
        if (kb + BN < kmax) load_tile(kb + BN, st ^ 1);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        const __nv_bfloat16 *kt = ks + st * BN * KS, *vt = vs + st * BN * KS;

        // s = q k^T for this warp's 16 rows and the tile's keys, two key groups of 8 per
        // ldmatrix: matrices (keys n, dims lo), (keys n, dims hi), (keys n + 1, lo), (n + 1, hi).
        float s[BN / 8][4];
#pragma unroll
        for (int n = 0; n < BN / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
        for (int n = 0; n < BN / 8; n += 2) {
#pragma unroll
            for (int kc = 0; kc < D / 16; ++kc) {
                uint32_t kf[4];
                ldmatrix_x4(kf, &kt[((n + lmat / 2) * 8 + lrow) * KS + kc * 16 + (lmat % 2) * 8]);
                mma_bf16_16816(s[n], qf[kc], kf[0], kf[1]);
                mma_bf16_16816(s[n + 1], qf[kc], kf[2], kf[3]);
            }
        }
        // Keys outside a row's range become -inf; tiles wholly inside every range of the
        // warp's rows (most of them) skip the comparisons.
        const bool inside = __all_sync(0xffffffff, kb >= lo[0] && kb >= lo[1] && kb + BN <= hi[0] && kb + BN <= hi[1]);
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int n = 0; n < BN / 8; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int x = e / 2;
                if (!inside) {
                    const uint32_t j = kb + n * 8 + t4 * 2 + (e & 1);
                    if (j < lo[x] || j >= hi[x]) s[n][e] = -INFINITY;
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
            const float alpha = exp2f(m_run[x] - base[x]);
            m_run[x] = m_new;
            l_run[x] *= alpha;
#pragma unroll
            for (int n = 0; n < D / 8; ++n) {
                o[n][2 * x] *= alpha;
                o[n][2 * x + 1] *= alpha;
            }
        }
#pragma unroll
        for (int n = 0; n < BN / 8; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float p = exp2f(fmaf(s[n][e], scale_log2, -base[e / 2]));
                s[n][e] = p;
                l_run[e / 2] += p;
            }
        }
        // o += p v: p from the score fragments, v through transposing ldmatrix:
        // matrices (keys lo, dims n), (keys hi, dims n), (keys lo, dims n + 1), (keys hi, dims n + 1).
#pragma unroll
        for (int kc = 0; kc < BN / 16; ++kc) {
            const uint32_t a[4] = {pack_bf16(s[2 * kc][0], s[2 * kc][1]), pack_bf16(s[2 * kc][2], s[2 * kc][3]),
                                   pack_bf16(s[2 * kc + 1][0], s[2 * kc + 1][1]),
                                   pack_bf16(s[2 * kc + 1][2], s[2 * kc + 1][3])};
#pragma unroll
            for (int n = 0; n < D / 8; n += 2) {
                uint32_t vf[4];
                ldmatrix_x4_trans(vf, &vt[(kc * 16 + (lmat % 2) * 8 + lrow) * KS + (n + lmat / 2) * 8]);
                mma_bf16_16816(o[n], a, vf[0], vf[1]);
                mma_bf16_16816(o[n + 1], a, vf[2], vf[3]);
            }
        }
        __syncthreads();
    }
    cp_async_wait<0>();

#pragma unroll
    for (int x = 0; x < 2; ++x) {
        float l = l_run[x];
        l += __shfl_xor_sync(0xffffffff, l, 1);
        l += __shfl_xor_sync(0xffffffff, l, 2);
        const uint32_t i = m0 + r0 + 8 * x;
        if (i >= n_q) continue;
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
        __nv_bfloat16 *dst = out + (uint64_t)b * o_sb + (uint64_t)h * o_sh + (uint64_t)i * o_si;
#pragma unroll
        for (int n = 0; n < D / 8; ++n) {
            *reinterpret_cast<__nv_bfloat162 *>(&dst[n * 8 + t4 * 2]) =
                __floats2bfloat162_rn(o[n][2 * x] * inv, o[n][2 * x + 1] * inv);
        }
    }
}

#define FLASH(D)                                                                                                    \
    extern "C" __global__ void __launch_bounds__(128) flash_attention_d##D(                                        \
        const __nv_bfloat16 *q, const __nv_bfloat16 *k, const __nv_bfloat16 *v, const __nv_bfloat16 *kp,          \
        const __nv_bfloat16 *vp, __nv_bfloat16 *out, const uint32_t *lo, const uint32_t *hi, uint32_t n_q,         \
        uint32_t q_off, uint32_t past, uint32_t group, int causal, float scale_log2, uint32_t q_sb, uint32_t q_sh,  \
        uint32_t q_si, uint32_t k_sb, uint32_t k_sh, uint32_t k_si, uint32_t p_sh, uint32_t p_si, uint32_t o_sb,   \
        uint32_t o_sh, uint32_t o_si) {                                                                            \
        flash_attention<D>(q, k, v, kp, vp, out, lo, hi, n_q, q_off, past, group, causal, scale_log2, q_sb, q_sh,  \
                           q_si, k_sb, k_sh, k_si, p_sh, p_si, o_sb, o_sh, o_si);                                  \
    }

FLASH(16)
FLASH(64)
FLASH(80)
FLASH(128)

#define INSTANTIATE(T, SUFFIX)                                                                      \
    extern "C" __global__ void bias_add_##SUFFIX(const T *x, const T *b, T *o, uint32_t r, uint32_t c) { \
        bias_add<T>(x, b, o, r, c);                                                                 \
    }                                                                                               \
    extern "C" __global__ void swiglu_##SUFFIX(const T *g, const T *u, T *o, uint32_t n) {          \
        swiglu<T>(g, u, o, n);                                                                      \
    }                                                                                               \
    extern "C" __global__ void softmax_rows_##SUFFIX(const T *x, T *o, uint32_t cols, float scale, int mode, \
                                                     uint32_t q_len, uint32_t past, const uint32_t *lengths, \
                                                     uint32_t rows_per_segment) {                   \
        softmax_rows<T>(x, o, cols, scale, mode, q_len, past, lengths, rows_per_segment);           \
    }                                                                                               \
    extern "C" __global__ void rope_rows_##SUFFIX(const T *x, const float *c, const float *s, T *o,  \
                                                  uint32_t rows, uint32_t heads, uint32_t dim) {    \
        rope_rows<T>(x, c, s, o, rows, heads, dim);                                                 \
    }                                                                                               \
    extern "C" __global__ void segment_attention_##SUFFIX(const T *q, const T *k, const T *v, T *o,   \
                                                          const uint32_t *bounds, uint32_t heads,    \
                                                          uint32_t dim, uint32_t stride, uint32_t max_len, \
                                                          float scale) {                             \
        segment_attention<T>(q, k, v, o, bounds, heads, dim, stride, max_len, scale);               \
    }                                                                                               \
    extern "C" __global__ void qkv_epilogue_##SUFFIX(const T *x, const T *b, const float *c, const float *s, \
                                                     T *q, T *k, T *v, uint32_t rows, uint32_t qh,  \
                                                     uint32_t kvh, uint32_t dim, uint32_t seq) {    \
        qkv_epilogue<T>(x, b, c, s, q, k, v, rows, qh, kvh, dim, seq);                              \
    }                                                                                               \
    extern "C" __global__ void bias_swiglu_##SUFFIX(const T *x, const T *b, T *o, uint32_t rows, uint32_t n) { \
        bias_swiglu<T>(x, b, o, rows, n);                                                           \
    }                                                                                               \
    extern "C" __global__ void bias_residual_##SUFFIX(const T *x, const T *b, const T *res, T *o,    \
                                                      uint32_t rows, uint32_t cols) {               \
        bias_residual<T>(x, b, res, o, rows, cols);                                                 \
    }

INSTANTIATE(__nv_bfloat16, bf16)
INSTANTIATE(float, f32)
