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
