"""Comparing two computations of the same thing, with tolerances that scale with dtype."""

import numpy as np

import tinynet

# (rtol, atol relative to the largest magnitude of the reference)
TOLERANCE = {np.dtype(np.float32): (2e-4, 2e-5), np.dtype(np.float64): (1e-9, 1e-11)}


def assert_close(name, got, ref, dtype=None, scale=1.0, truth=None):
    """|got - ref| <= atol + rtol |ref| elementwise; on failure print the first mismatches.

    truth: the same computation in float64, for problems whose conditioning amplifies rounding
    (an LSTM with relu gates lets c grow without bound, to 1e8 in 30 steps). There two float32
    results can differ by more than the tolerance while each is as close to the float64 result
    as float32 allows; an element that misses `ref` then passes when it is no farther from
    `truth` than twice `ref` is (plus the tolerance): never less accurate than the reference."""
    got = tinynet.to_numpy(got)
    ref = tinynet.to_numpy(ref)
    assert got.shape == ref.shape, f"{name}: shape {got.shape} != reference {ref.shape}"
    dtype = np.dtype(dtype or ref.dtype)
    assert got.dtype == dtype, f"{name}: dtype {got.dtype}, expected {dtype}"
    rtol, atol = TOLERANCE[dtype]
    rtol, atol = rtol * scale, atol * scale
    ref64 = ref.astype(np.float64)
    magnitude = max(1.0, float(np.max(np.abs(ref64)))) if ref.size else 1.0
    err = np.abs(got.astype(np.float64) - ref64)
    bad = ~(err <= atol * magnitude + rtol * np.abs(ref64))
    bad &= ~(np.isnan(got) & np.isnan(ref))
    bad &= ~(np.isinf(ref) & (got == ref))           # the same infinity (inf - inf is NaN)
    if truth is not None and bad.any():
        truth64 = np.asarray(truth, np.float64)
        own_error = np.abs(ref64 - truth64)
        as_accurate = (np.abs(got.astype(np.float64) - truth64)
                       <= 2 * own_error + atol * magnitude + rtol * np.abs(truth64))
        bad &= ~as_accurate
    if bad.any():
        where = np.argwhere(bad)[:5]
        lines = [f"  {tuple(int(i) for i in idx)}: got {got[tuple(idx)]!r}, "
                 f"ref {ref[tuple(idx)]!r}" for idx in where]
        raise AssertionError(f"{name}: {int(bad.sum())} of {bad.size} elements differ "
                             f"(rtol={rtol}, atol={atol}*{magnitude:.3g}); first:\n"
                             + "\n".join(lines))


def lstm_grad_scale(batch, steps):
    """The tolerance scale for the gradients of a whole-sequence LSTM: each is a sum over
    batch x steps terms, whose rounding errors grow like the square root of their count."""
    return float(np.sqrt(max(batch, 1) * max(steps, 1)))


def assert_grads_close(case, names, grads, grads_ref, scale=1.0):
    """Each gradient close to the reference's; where the reference is None (no bias), the
    backend's must be None too."""
    assert len(grads) == len(grads_ref) == len(names), f"{case}: {len(grads)} gradients"
    for name, got, ref in zip(names, grads, grads_ref):
        if ref is None:
            assert got is None, f"{case} {name}: expected None, like the reference"
        else:
            assert_close(f"{case} {name}", got, ref, scale=scale)
