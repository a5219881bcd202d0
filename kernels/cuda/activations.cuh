// Activations of the CUDA C kernel family (the `cupy` backend), written once for float and
// double. Included by every kernels/cuda/*.cu file.
//
// Reference: tinynet/backends/numpy_ref.py:activate, :activation_grad, :sigmoid.
// Codes:     tinynet/_activations.py CODES (0 linear, 1 relu, 2 sigmoid, 3 tanh).
//
// Each derivative is written with the activation's *output* y, so forward passes save outputs
// only. NVRTC has no <cmath>: the CUDA built-ins expf/exp and tanhf/tanh are used, one
// overload per type, so a float kernel never computes in double.

#pragma once

enum ActivationCode : int { ACT_LINEAR = 0, ACT_RELU = 1, ACT_SIGMOID = 2, ACT_TANH = 3 };

__device__ __forceinline__ float exp_of(float z) { return expf(z); }
__device__ __forceinline__ double exp_of(double z) { return exp(z); }
__device__ __forceinline__ float tanh_of(float z) { return tanhf(z); }
__device__ __forceinline__ double tanh_of(double z) { return tanh(z); }
__device__ __forceinline__ float abs_of(float z) { return fabsf(z); }
__device__ __forceinline__ double abs_of(double z) { return fabs(z); }

// y = act(z). NaN propagates as in NumPy (np.maximum(nan, 0) is nan).
template <typename T>
__device__ __forceinline__ T activate(int code, T z)
{
    if (code == ACT_LINEAR) return z;
    if (code == ACT_RELU) return z < T(0) ? T(0) : z;
    if (code == ACT_SIGMOID) {
        // exp is only taken of -|z|: it never overflows (numpy_ref.sigmoid)
        const T e = exp_of(-abs_of(z));
        return (z >= T(0) ? T(1) : e) / (T(1) + e);
    }
    return tanh_of(z);
}

// d act / d z, from the output y = act(z).
template <typename T>
__device__ __forceinline__ T activation_grad(int code, T y)
{
    if (code == ACT_LINEAR) return T(1);
    if (code == ACT_RELU) return y > T(0) ? T(1) : T(0);
    if (code == ACT_SIGMOID) return y * (T(1) - y);
    return T(1) - y * y;
}
