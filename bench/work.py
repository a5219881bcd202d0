"""The work of each op, counted: FLOPs, and the fewest bytes that must move through memory
(each input read once, each output written once; what a backend saves between forward and
backward is not counted, so the byte floor is a lower bound). A multiply-add is 2 FLOPs;
each elementwise operation counts 1 (an activation counts 1, its derivative 2).
Returns (flops, bytes) for arrays of `itemsize` bytes (4 for float32)."""


def dense_forward(batch, n_in, n_out, bias=True, itemsize=4):
    # x (batch, in) @ w (in, out) [+ b (out,)] -> act -> y (batch, out)
    flops = 2 * batch * n_in * n_out + batch * n_out * (2 if bias else 1)
    elements = batch * n_in + n_in * n_out + (n_out if bias else 0) + batch * n_out
    return flops, elements * itemsize


def dense_backward(batch, n_in, n_out, bias=True, itemsize=4):
    # dz = dy * act'(y); dx = dz @ w.T; dw = x.T @ dz; db = sum(dz)
    flops = 4 * batch * n_in * n_out + 3 * batch * n_out + (batch * n_out if bias else 0)
    reads = batch * n_in + n_in * n_out + 2 * batch * n_out            # x, w, y, dy
    writes = batch * n_in + n_in * n_out + (n_out if bias else 0)      # dx, dw, db
    return flops, (reads + writes) * itemsize


def _gate_gemm_flops(batch, n_in, hidden):
    return 2 * batch * (n_in + hidden) * 4 * hidden                     # x @ w_ih + h @ w_hh


def _weights(n_in, hidden):
    return (n_in + hidden) * 4 * hidden + 4 * hidden                   # w_ih, w_hh, b


def lstm_cell_forward(batch, n_in, hidden, itemsize=4):
    # z = x @ w_ih + h @ w_hh + b; 4 gate activations; c1 = f c + i g; h1 = o a(c1)
    flops = _gate_gemm_flops(batch, n_in, hidden) + 14 * batch * hidden
    elements = batch * n_in + 2 * batch * hidden + _weights(n_in, hidden) + 2 * batch * hidden
    return flops, elements * itemsize


def lstm_cell_backward(batch, n_in, hidden, itemsize=4):
    # dz (batch, 4H) from the gates; dx, dh = dz @ w.T; dw_ih, dw_hh = x.T @ dz, h.T @ dz; db
    flops = 2 * _gate_gemm_flops(batch, n_in, hidden) + 24 * batch * hidden
    reads = batch * n_in + 4 * batch * hidden + _weights(n_in, hidden)   # x, h, c, dh1, dc1
    writes = batch * n_in + 2 * batch * hidden + _weights(n_in, hidden)  # dx, dh, dc, dw, db
    return flops, (reads + writes) * itemsize


def lstm_forward(batch, steps, n_in, hidden, itemsize=4):
    flops = steps * lstm_cell_forward(batch, n_in, hidden)[0]
    elements = (batch * steps * n_in + 2 * batch * hidden + _weights(n_in, hidden)
                + batch * steps * hidden + 2 * batch * hidden)          # xs, h0, c0 -> hs, hT, cT
    return flops, elements * itemsize


def lstm_backward(batch, steps, n_in, hidden, itemsize=4):
    flops = steps * lstm_cell_backward(batch, n_in, hidden)[0]
    reads = (batch * steps * n_in + 2 * batch * hidden + _weights(n_in, hidden)
             + 2 * batch * steps * hidden)                             # xs, h0, c0, w, hs, dhs
    writes = batch * steps * n_in + 2 * batch * hidden + _weights(n_in, hidden)
    return flops, (reads + writes) * itemsize


def add(*works):
    return sum(w[0] for w in works), sum(w[1] for w in works)
