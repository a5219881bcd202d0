// The pointwise LSTM cell math of the CUDA C family, for one (batch row, unit): the forward
// gate arithmetic and its backward. Included by lstm_cell.cu and lstm.cu.
//
// Reference: tinynet/backends/numpy_ref.py:_cell_step, :_cell_step_backward.
// Gate blocks are i, f, g, o (input, forget, candidate, output): unit u of gate q is column
// q * H + u of a (batch, 4H) gate array. a = activation, ra = recurrent_activation.
//
// The forward saves the gate outputs (i, f, g, o) and c1; the backward recomputes a(c1) from
// c1 with the same code (the reference saves a(c1); the value is the same).

#pragma once

#include "activations.cuh"

// One unit's four gate values. Aligned as one vector so shared-memory copies of it are
// single 16-byte (float) loads.
template <typename T>
struct alignas(4 * sizeof(T)) Gates {
    T i, f, g, o;
};

// The four gate values of unit u in row `row` of a (rows, 4H) array.
template <typename T>
__device__ __forceinline__ Gates<T> load_gates(const T* __restrict__ rows, size_t row, int hidden,
                                               int u)
{
    const T* p = rows + row * 4 * hidden + u;
    return Gates<T>{p[0], p[hidden], p[2 * hidden], p[3 * hidden]};
}

template <typename T>
__device__ __forceinline__ void store_gates(T* __restrict__ rows, size_t row, int hidden, int u,
                                            const Gates<T>& v)
{
    T* p = rows + row * 4 * hidden + u;
    p[0] = v.i;
    p[hidden] = v.f;
    p[2 * hidden] = v.g;
    p[3 * hidden] = v.o;
}

// z: the pre-activations x @ w_ih + h @ w_hh + b of the unit. Returns the gate outputs and
// sets c1 = f * c + i * g, h1 = o * a(c1).
template <typename T>
__device__ __forceinline__ Gates<T> cell_forward(const Gates<T>& z, T c, int activation,
                                                 int recurrent_activation, T forget_bias,
                                                 T& c1, T& h1)
{
    Gates<T> gate;
    gate.i = activate(recurrent_activation, z.i);
    gate.f = activate(recurrent_activation, z.f + forget_bias);
    gate.g = activate(activation, z.g);
    gate.o = activate(recurrent_activation, z.o);
    c1 = gate.f * c + gate.i * gate.g;
    h1 = gate.o * activate(activation, c1);
    return gate;
}

// dh1, dc: the gradients of h1 and c1 of this step (dc is the running cell gradient); c: the
// cell state the step started from; gate, c1: what the forward saved. Returns dz, the
// gradient of the pre-activations, and sets dc to the gradient of c.
template <typename T>
__device__ __forceinline__ Gates<T> cell_backward(T dh1, T& dc, T c, const Gates<T>& gate, T c1,
                                                  int activation, int recurrent_activation)
{
    const T a_c1 = activate(activation, c1);
    const T d_o = dh1 * a_c1;
    dc = dc + dh1 * gate.o * activation_grad(activation, a_c1);
    Gates<T> dz;
    dz.i = dc * gate.g * activation_grad(recurrent_activation, gate.i);
    dz.f = dc * c * activation_grad(recurrent_activation, gate.f);
    dz.g = dc * gate.i * activation_grad(activation, gate.g);
    dz.o = d_o * activation_grad(recurrent_activation, gate.o);
    dc = dc * gate.f;
    return dz;
}
