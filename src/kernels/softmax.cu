// Softmax over materialized attention scores: masked row softmax, and whole attention within
// short segments (the vision tower's windows) with the scores in shared memory.
#include "common.cuh"

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

#define INSTANTIATE(T, SUFFIX)                                                                               \
    extern "C" __global__ void softmax_rows_##SUFFIX(const T *x, T *o, uint32_t cols, float scale, int mode, \
                                                     uint32_t q_len, uint32_t past, const uint32_t *lengths, \
                                                     uint32_t rows_per_segment) {                            \
        softmax_rows<T>(x, o, cols, scale, mode, q_len, past, lengths, rows_per_segment);                    \
    }                                                                                                        \
    extern "C" __global__ void segment_attention_##SUFFIX(const T *q, const T *k, const T *v, T *o,          \
                                                          const uint32_t *bounds, uint32_t heads,            \
                                                          uint32_t dim, uint32_t stride, uint32_t max_len,   \
                                                          float scale) {                                     \
        segment_attention<T>(q, k, v, o, bounds, heads, dim, stride, max_len, scale);                        \
    }

INSTANTIATE(__nv_bfloat16, bf16)
INSTANTIATE(float, f32)
