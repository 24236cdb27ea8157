// What every kernel file shares: bf16 <-> f32 conversion. All arithmetic is in f32; values
// are stored in the tensor's type (bf16 or f32). Element counts are below 2^32 (the callers
// check), so indices are 32-bit.
#pragma once
#include <cuda_bf16.h>
#include <stdint.h>

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16(x); }

// Eight bf16 values in one 16-byte load or store, and their f32 values.
union Bf16x8 {
    uint4 raw;
    __nv_bfloat162 pair[4];
};
__device__ __forceinline__ void unpack8(const uint4 &raw, float (&f)[8]) {
    Bf16x8 u;
    u.raw = raw;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const float2 t = __bfloat1622float2(u.pair[j]);
        f[2 * j] = t.x;
        f[2 * j + 1] = t.y;
    }
}
__device__ __forceinline__ uint4 pack8(const float (&f)[8]) {
    Bf16x8 u;
#pragma unroll
    for (int j = 0; j < 4; ++j) u.pair[j] = __floats2bfloat162_rn(f[2 * j], f[2 * j + 1]);
    return u.raw;
}
__device__ __forceinline__ void load8(const __nv_bfloat16 *p, float (&f)[8]) { unpack8(*reinterpret_cast<const uint4 *>(p), f); }
__device__ __forceinline__ void store8(__nv_bfloat16 *p, const float (&f)[8]) { *reinterpret_cast<uint4 *>(p) = pack8(f); }
