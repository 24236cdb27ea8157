// Elementwise kernels of the MLP and residual steps. candle runs each of these as separate,
// strided kernels (a broadcast add alone reached 260 GB/s of the H100's 3 TB/s); fused, each
// is one pass over memory.
#include "common.cuh"

// out[r, c] = x[r, c] + bias[c] for a row-major (rows, cols) x.
template <typename T>
__device__ void bias_add(const T *x, const T *bias, T *out, uint32_t rows, uint32_t cols) {
    const uint32_t n = rows * cols;
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        out[i] = from_f<T>(to_f(x[i]) + to_f(bias[i % cols]));
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

// The same three for bf16, eight values (16 bytes) per thread and step: rows of a multiple
// of 8 values, every pointer 16-byte aligned (the callers check). Same arithmetic as above.
// A null bias in bias_residual_v8 is no bias (the language model's residual adds).
extern "C" __global__ void bias_add_v8(const __nv_bfloat16 *x, const __nv_bfloat16 *bias, __nv_bfloat16 *out,
                                       uint32_t rows, uint32_t cols) {
    const uint32_t n8 = rows * cols / 8;
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n8; i += gridDim.x * blockDim.x) {
        const uint32_t c = (i * 8) % cols;
        float a[8], b[8];
        load8(x + 8 * (size_t)i, a);
        load8(bias + c, b);
#pragma unroll
        for (int j = 0; j < 8; ++j) a[j] += b[j];
        store8(out + 8 * (size_t)i, a);
    }
}

extern "C" __global__ void bias_swiglu_v8(const __nv_bfloat16 *x, const __nv_bfloat16 *bias, __nv_bfloat16 *out,
                                          uint32_t rows, uint32_t n) {
    const uint32_t per_row = n / 8, total = rows * per_row;
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const uint32_t r = i / per_row, c = (i - r * per_row) * 8;
        float g[8], u[8], bg[8], bu[8];
        load8(x + (size_t)r * 2 * n + c, g);
        load8(x + (size_t)r * 2 * n + n + c, u);
        load8(bias + c, bg);
        load8(bias + n + c, bu);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const float gj = g[j] + bg[j];
            g[j] = gj / (1.0f + __expf(-gj)) * (u[j] + bu[j]);
        }
        store8(out + (size_t)r * n + c, g);
    }
}

extern "C" __global__ void bias_residual_v8(const __nv_bfloat16 *x, const __nv_bfloat16 *bias,
                                            const __nv_bfloat16 *residual, __nv_bfloat16 *out, uint32_t rows,
                                            uint32_t cols) {
    const uint32_t n8 = rows * cols / 8;
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n8; i += gridDim.x * blockDim.x) {
        float a[8], r[8], b[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        load8(x + 8 * (size_t)i, a);
        load8(residual + 8 * (size_t)i, r);
        if (bias != nullptr) load8(bias + (i * 8) % cols, b);
#pragma unroll
        for (int j = 0; j < 8; ++j) r[j] += a[j] + b[j];
        store8(out + 8 * (size_t)i, r);
    }
}

// RMSNorm of each row of a (rows, cols) bf16 x, one warp per row, the row held in registers
// (cols a multiple of 8, at most 32 * 8 * MAXC): out = x * rsqrt(mean(x^2) + eps) * w, all in
// f32 and rounded once, as candle's rmsnorm kernel computes it.
template <int MAXC>
__device__ void rms_norm_v8(const __nv_bfloat16 *x, const __nv_bfloat16 *w, __nv_bfloat16 *out, uint32_t rows,
                            uint32_t cols, float eps) {
    const uint32_t lane = threadIdx.x % 32, warps = blockDim.x / 32;
    const uint32_t chunks = cols / 8;
    for (uint32_t row = blockIdx.x * warps + threadIdx.x / 32; row < rows; row += gridDim.x * warps) {
        const __nv_bfloat16 *xr = x + (size_t)row * cols;
        uint4 v[MAXC];
        float sum = 0.0f;
#pragma unroll
        for (int j = 0; j < MAXC; ++j) {
            const uint32_t c = lane + 32 * j;
            if (c < chunks) {
                v[j] = *reinterpret_cast<const uint4 *>(xr + 8 * c);
                float f[8];
                unpack8(v[j], f);
#pragma unroll
                for (int e = 0; e < 8; ++e) sum += f[e] * f[e];
            }
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffff, sum, o);
        const float scale = rsqrtf(sum / (float)cols + eps);
        __nv_bfloat16 *orow = out + (size_t)row * cols;
#pragma unroll
        for (int j = 0; j < MAXC; ++j) {
            const uint32_t c = lane + 32 * j;
            if (c < chunks) {
                float f[8], g[8];
                unpack8(v[j], f);
                load8(w + 8 * c, g);
#pragma unroll
                for (int e = 0; e < 8; ++e) f[e] = f[e] * scale * g[e];
                store8(orow + 8 * c, f);
            }
        }
    }
}

extern "C" __global__ void rms_norm_v8(const __nv_bfloat16 *x, const __nv_bfloat16 *w, __nv_bfloat16 *out,
                                       uint32_t rows, uint32_t cols, float eps) {
    rms_norm_v8<16>(x, w, out, rows, cols, eps);
}

#define INSTANTIATE(T, SUFFIX)                                                                                 \
    extern "C" __global__ void bias_add_##SUFFIX(const T *x, const T *b, T *o, uint32_t r, uint32_t c) {       \
        bias_add<T>(x, b, o, r, c);                                                                            \
    }                                                                                                          \
    extern "C" __global__ void bias_swiglu_##SUFFIX(const T *x, const T *b, T *o, uint32_t rows, uint32_t n) { \
        bias_swiglu<T>(x, b, o, rows, n);                                                                      \
    }                                                                                                          \
    extern "C" __global__ void bias_residual_##SUFFIX(const T *x, const T *b, const T *res, T *o,              \
                                                      uint32_t rows, uint32_t cols) {                          \
        bias_residual<T>(x, b, res, o, rows, cols);                                                            \
    }

INSTANTIATE(__nv_bfloat16, bf16)
INSTANTIATE(float, f32)
