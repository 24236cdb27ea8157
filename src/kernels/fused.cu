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
