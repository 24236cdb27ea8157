// Rotary position embedding (rotate-half, f32 math), alone and as the epilogue of the fused
// q/k/v projection.
#include "common.cuh"

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

// Where the values of head h (of q_heads + 2 kv_heads, in q, k, v order) of row r begin:
// in q, k or v, laid out (rows, heads, dim) or, when seq > 0, (rows / seq, heads, seq, dim).
template <typename T>
__device__ __forceinline__ T *qkv_head(T *q, T *k, T *v, uint32_t r, uint32_t h, uint32_t q_heads, uint32_t kv_heads,
                                       uint32_t dim, uint32_t seq) {
    T *dst;
    uint32_t hh, nh;
    if (h < q_heads) {
        dst = q; hh = h; nh = q_heads;
    } else if (h < q_heads + kv_heads) {
        dst = k; hh = h - q_heads; nh = kv_heads;
    } else {
        dst = v; hh = h - q_heads - kv_heads; nh = kv_heads;
    }
    const size_t base = seq > 0 ? ((size_t)((r / seq) * nh + hh) * seq + r % seq) * dim : ((size_t)r * nh + hh) * dim;
    return dst + base;
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
        if (h < q_heads + kv_heads) {
            const float c = cos[r * half + d], s = sin[r * half + d];
            const float ra = a * c - b * s, rb = b * c + a * s;
            a = ra;
            b = rb;
        }
        T *dst = qkv_head(q, k, v, r, h, q_heads, kv_heads, dim, seq);
        dst[d] = from_f<T>(a);
        dst[d + half] = from_f<T>(b);
    }
}

// qkv_epilogue for bf16, eight dimensions (16 bytes) of each half per thread: dim / 2 a
// multiple of 8, every pointer 16-byte aligned (the callers check). Same arithmetic.
extern "C" __global__ void qkv_epilogue_v8(const __nv_bfloat16 *x, const __nv_bfloat16 *bias, const float *cos,
                                           const float *sin, __nv_bfloat16 *q, __nv_bfloat16 *k, __nv_bfloat16 *v,
                                           uint32_t rows, uint32_t q_heads, uint32_t kv_heads, uint32_t dim,
                                           uint32_t seq) {
    const uint32_t half = dim / 2, per_head = half / 8;
    const uint32_t heads = q_heads + 2 * kv_heads;
    const uint32_t width = heads * dim;
    const uint32_t n = rows * heads * per_head;
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const uint32_t d = (i % per_head) * 8;
        const uint32_t rh = i / per_head;
        const uint32_t h = rh % heads;
        const uint32_t r = rh / heads;
        const uint32_t col = h * dim + d;
        float a[8], b[8], ba[8], bb[8];
        load8(x + (size_t)r * width + col, a);
        load8(x + (size_t)r * width + col + half, b);
        load8(bias + col, ba);
        load8(bias + col + half, bb);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            a[j] += ba[j];
            b[j] += bb[j];
        }
        if (h < q_heads + kv_heads) {
            const float4 *cp = reinterpret_cast<const float4 *>(cos + (size_t)r * half + d);
            const float4 *sp = reinterpret_cast<const float4 *>(sin + (size_t)r * half + d);
            const float4 c0 = cp[0], c1 = cp[1], s0 = sp[0], s1 = sp[1];
            const float c[8] = {c0.x, c0.y, c0.z, c0.w, c1.x, c1.y, c1.z, c1.w};
            const float sn[8] = {s0.x, s0.y, s0.z, s0.w, s1.x, s1.y, s1.z, s1.w};
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                const float ra = a[j] * c[j] - b[j] * sn[j], rb = b[j] * c[j] + a[j] * sn[j];
                a[j] = ra;
                b[j] = rb;
            }
        }
        __nv_bfloat16 *dst = qkv_head(q, k, v, r, h, q_heads, kv_heads, dim, seq);
        store8(dst + d, a);
        store8(dst + d + half, b);
    }
}

#define INSTANTIATE(T, SUFFIX)                                                                               \
    extern "C" __global__ void rope_rows_##SUFFIX(const T *x, const float *c, const float *s, T *o,          \
                                                  uint32_t rows, uint32_t heads, uint32_t dim) {             \
        rope_rows<T>(x, c, s, o, rows, heads, dim);                                                          \
    }                                                                                                        \
    extern "C" __global__ void qkv_epilogue_##SUFFIX(const T *x, const T *b, const float *c, const float *s, \
                                                     T *q, T *k, T *v, uint32_t rows, uint32_t qh,           \
                                                     uint32_t kvh, uint32_t dim, uint32_t seq) {             \
        qkv_epilogue<T>(x, b, c, s, q, k, v, rows, qh, kvh, dim, seq);                                       \
    }

INSTANTIATE(__nv_bfloat16, bf16)
INSTANTIATE(float, f32)
