"""The numba-cpu backend beyond the cross-backend matrix of test_backends_agree.py: both size
paths (tiny loops, BLAS) on each side of every threshold, determinism, memory layouts and
read-only inputs, zero-size batches, NaN propagation, and that `import tinynet` leaves Numba
alone."""

import os
import subprocess
import sys

import numpy as np
import pytest

from tinynet import ops
from _compare import assert_close, lstm_grad_scale
from _problems import dense_problem, lstm_problem
from conftest import USABLE, WHY

pytestmark = pytest.mark.skipif(not USABLE["numba-cpu"],
                                reason=f"numba-cpu not usable: {WHY['numba-cpu']}")

DTYPES = [np.float32, np.float64]
LIMITS = ("DENSE_LOOPS_MAX_MACS", "CELL_LOOPS_MAX_MACS", "LSTM_LOOPS_MAX_MACS",
          "LOOPS_MAX_ROWS")


def backend_module():
    from tinynet.backends import numba_cpu
    return numba_cpu


@pytest.fixture(params=["loops", "blas"])
def path(request, monkeypatch):
    """Force every op onto one of its two paths, whatever the size."""
    module = backend_module()
    loops = request.param == "loops"
    for name in LIMITS:
        monkeypatch.setattr(module, name, 1 << 62 if loops else -1)
    monkeypatch.setattr(module, "LSTM_PROJECT_MIN_IN", 1 << 62 if loops else 0)
    return request.param


# --- the three ops through both backends ---------------------------------------------

def run_dense(backend, problem, activation="sigmoid"):
    x, w, b, dy = problem
    y, ctx = ops.dense(x, w, b, activation, backend=backend)
    return [y, *ops.dense_backward(ctx, dy)]


def run_cell(backend, problem, activation="tanh", recurrent_activation="sigmoid"):
    inputs, (dh1, _, dc1) = problem
    h1, c1, ctx = ops.lstm_cell(*inputs, activation=activation,
                                recurrent_activation=recurrent_activation, forget_bias=1.0,
                                backend=backend)
    return [h1, c1, *ops.lstm_cell_backward(ctx, dh1, dc1)]


def run_lstm(backend, problem, activation="tanh", recurrent_activation="sigmoid"):
    inputs, (dhs, dhT, dcT) = problem
    hs, hT, cT, ctx = ops.lstm(*inputs, activation=activation,
                               recurrent_activation=recurrent_activation, forget_bias=0.5,
                               backend=backend)
    return [hs, hT, cT, *ops.lstm_backward(ctx, dhs, dhT, dcT)]


def assert_agree(case, got, ref, scale):
    for index, (g, r) in enumerate(zip(got, ref)):
        if r is None:
            assert g is None, f"{case} output {index}: expected None"
        else:
            assert_close(f"{case} output {index}", g, r, scale=scale)


# --- both paths, forced, and the default choice on each side of each threshold ----------

def shapes_around(limit, fixed):
    """Leading sizes n with n * fixed just at and just above `limit`: one on each side."""
    below = max(limit // fixed, 1)
    return sorted({below, below + 1})


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_paths(rng, dtype, path):
    for batch, n_in, n_out in [(1, 1, 1), (3, 17, 5), (33, 7, 19)]:
        problem = dense_problem(rng, batch, n_in, n_out, dtype)
        for activation in ("linear", "relu", "sigmoid", "tanh"):
            for bias in (problem[2], None):
                changed = (problem[0], problem[1], bias, problem[3])
                assert_agree(f"dense {path} {activation} {(batch, n_in, n_out)} "
                             f"bias={bias is not None}", run_dense("numba-cpu", changed,
                                                                   activation),
                             run_dense("numpy", changed, activation), np.sqrt(batch))


class KernelSpy:
    """Stands in for the backend's kernels of one dtype and records which ones are used."""

    def __init__(self, kernels):
        self.kernels = kernels
        self.used = set()

    def __getattr__(self, name):
        self.used.add(name)
        return getattr(self.kernels, name)


def test_default_thresholds_pick_each_path(rng, monkeypatch):
    """Unforced, shapes just below and just above each threshold take the two paths, and
    both agree with the reference."""
    module = backend_module()
    dtype = np.dtype(np.float32)

    def run_spied(run, problem):
        spy = KernelSpy(module._KERNELS[dtype])
        monkeypatch.setitem(module._KERNELS, dtype, spy)
        outputs = run("numba-cpu", problem)
        monkeypatch.setitem(module._KERNELS, dtype, spy.kernels)
        return outputs, spy.used

    used = []
    for batch in shapes_around(module.DENSE_LOOPS_MAX_MACS, 3 * 11):
        problem = dense_problem(rng, batch, 3, 11, np.float32)
        got, kernels = run_spied(run_dense, problem)
        used.append("dense_forward_loops" in kernels)
        assert_agree(f"dense batch={batch}", got, run_dense("numpy", problem), np.sqrt(batch))
    assert used == [True, False], "dense: the threshold does not split the paths"

    used = []
    n_in, hidden = 2, 3
    for batch in shapes_around(module.CELL_LOOPS_MAX_MACS, (n_in + hidden) * 4 * hidden):
        problem = lstm_problem(rng, batch, None, n_in, hidden, np.float32)
        got, kernels = run_spied(run_cell, problem)
        used.append("cell_forward_loops" in kernels)
        assert_agree(f"cell batch={batch}", got, run_cell("numpy", problem), np.sqrt(batch))
    assert used == [True, False], "lstm_cell: the threshold does not split the paths"

    used = []
    steps, n_in = 4, module.LSTM_PROJECT_MIN_IN
    for batch in shapes_around(module.LSTM_LOOPS_MAX_MACS, steps * n_in * 4 * hidden):
        problem = lstm_problem(rng, batch, steps, n_in, hidden, np.float32)
        *_, ctx = ops.lstm(*problem[0], backend="numba-cpu")
        used.append(ctx.saved[-1])                      # projected: the BLAS input side
        assert_agree(f"lstm batch={batch}", run_lstm("numba-cpu", problem),
                     run_lstm("numpy", problem), lstm_grad_scale(batch, steps))
    assert used == [False, True], "lstm: the threshold does not split the paths"


@pytest.mark.parametrize("dtype", DTYPES)
def test_cell_and_lstm_paths(rng, dtype, path):
    for batch, n_in, hidden in [(1, 1, 1), (3, 5, 2), (9, 4, 6)]:
        problem = lstm_problem(rng, batch, None, n_in, hidden, dtype)
        assert_agree(f"cell {path} {(batch, n_in, hidden)}", run_cell("numba-cpu", problem),
                     run_cell("numpy", problem), np.sqrt(batch))
        problem = lstm_problem(rng, batch, 6, n_in, hidden, dtype)
        assert_agree(f"lstm {path} {(batch, 6, n_in, hidden)}", run_lstm("numba-cpu", problem),
                     run_lstm("numpy", problem), lstm_grad_scale(batch, 6))


# --- determinism ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_bit_identical_run_to_run(rng, dtype, path):
    problems = [(run_dense, dense_problem(rng, 37, 19, 23, dtype)),
                (run_cell, lstm_problem(rng, 13, None, 7, 9, dtype)),
                (run_lstm, lstm_problem(rng, 5, 11, 3, 6, dtype))]
    for run, problem in problems:
        first = run("numba-cpu", problem)
        again = run("numba-cpu", problem)
        for index, (a, b) in enumerate(zip(first, again)):
            assert np.array_equal(a, b), f"{run.__name__} {path} output {index} changed"


# --- memory layouts and read-only inputs ---------------------------------------------

def variants(a):
    """The same values as a Fortran-ordered, a strided and a read-only array."""
    fortran = np.asfortranarray(a)
    strided = np.repeat(a, 2, axis=-1)[..., ::2]
    read_only = a.copy()
    read_only.flags.writeable = False
    return {"fortran": fortran, "strided": strided, "read-only": read_only}


def layout_cases(problem):
    """For each variant kind, the problem with every array replaced by that variant."""
    for kind in ("fortran", "strided", "read-only"):
        yield kind, [None if a is None else variants(a)[kind] for a in problem]


@pytest.mark.parametrize("dtype", DTYPES)
def test_layouts_and_read_only_inputs(rng, dtype, path):
    x, w, b, dy = dense_problem(rng, 6, 5, 4, dtype)
    ref = run_dense("numpy", (x, w, b, dy))
    for kind, problem in layout_cases([x, w, b, dy]):
        assert_agree(f"dense {path} {kind}", run_dense("numba-cpu", problem), ref, 1.0)

    inputs, grads = lstm_problem(rng, 4, None, 3, 5, dtype)
    ref = run_cell("numpy", (inputs, grads))
    for kind, changed in layout_cases(list(inputs) + list(grads)):
        problem = (changed[:6], changed[6:])
        assert_agree(f"cell {path} {kind}", run_cell("numba-cpu", problem), ref, 2.0)

    inputs, grads = lstm_problem(rng, 3, 4, 2, 5, dtype)
    ref = run_lstm("numpy", (inputs, grads))
    for kind, changed in layout_cases(list(inputs) + list(grads)):
        problem = (changed[:6], changed[6:])
        assert_agree(f"lstm {path} {kind}", run_lstm("numba-cpu", problem), ref, 8.0)


# --- sizes of zero -------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_sizes(rng, dtype, path):
    for batch, n_in, n_out in [(0, 3, 4), (5, 0, 4), (5, 3, 0)]:
        problem = dense_problem(rng, batch, n_in, n_out, dtype)
        got = run_dense("numba-cpu", problem)
        ref = run_dense("numpy", problem)
        assert_agree(f"dense {path} {(batch, n_in, n_out)}", got, ref, 1.0)
    for batch, n_in, hidden in [(0, 3, 2), (2, 0, 3)]:
        problem = lstm_problem(rng, batch, None, n_in, hidden, dtype)
        assert_agree(f"cell {path} {(batch, n_in, hidden)}", run_cell("numba-cpu", problem),
                     run_cell("numpy", problem), 1.0)
    for batch, steps, n_in, hidden in [(0, 4, 3, 2), (2, 0, 3, 2), (2, 3, 0, 2)]:
        problem = lstm_problem(rng, batch, steps, n_in, hidden, dtype)
        assert_agree(f"lstm {path} {(batch, steps, n_in, hidden)}",
                     run_lstm("numba-cpu", problem), run_lstm("numpy", problem), 4.0)


# --- NaN and Inf propagate (the kernels are compiled with reassociation allowed) -----

@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_nan_and_inf_propagate_like_numpy(rng, path):
    x, w, b, dy = dense_problem(rng, 4, 3, 5, np.float64)
    x[1, 2] = np.nan
    x[2, 0] = np.inf
    ref = run_dense("numpy", (x, w, b, dy), "tanh")
    got = run_dense("numba-cpu", (x, w, b, dy), "tanh")
    for index, (g, r) in enumerate(zip(got, ref)):
        assert np.array_equal(np.isnan(g), np.isnan(r)), f"dense output {index}: NaN pattern"
    (xs, *rest), grads = lstm_problem(rng, 2, 5, 2, 3, np.float64)
    xs[0, 2, 1] = np.nan
    ref = run_lstm("numpy", ((xs, *rest), grads))
    got = run_lstm("numba-cpu", ((xs, *rest), grads))
    for index, (g, r) in enumerate(zip(got, ref)):
        assert np.array_equal(np.isnan(g), np.isnan(r)), f"lstm output {index}: NaN pattern"


# --- the float32 activations of the CPU kernels (kernels/numba_math.py cpu_activate) ---

def _activation_inputs():
    """float32 inputs over the whole range: dense, densest around the tanh's switch from its
    series to the 1 - e formula at |z| = 1/4 (its worst error is just above it), tiny of both
    signs, and the special values."""
    return np.concatenate([np.linspace(-20, 20, 40_001), np.linspace(-1, 1, 400_001),
                           np.geomspace(1e-30, 1, 20_001), -np.geomspace(1e-30, 1, 20_001),
                           [0.25, -0.25, 1e30, -1e30],
                           [0.0, -0.0, np.inf, -np.inf, np.nan]]).astype(np.float32)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_float32_activations_within_four_ulp(path, activation):
    # x (n, 1) @ [[1]] is exact, so y is the activation itself, computed in compiled code on
    # the loops path (the BLAS path hands tanh to NumPy, sigmoid's exp too)
    x = _activation_inputs()
    exact = {"tanh": np.tanh, "sigmoid": lambda v: 0.5 + 0.5 * np.tanh(0.5 * v)}[activation]
    ref = exact(x.astype(np.float64))
    one = np.ones((1, 1), np.float32)
    got = np.concatenate([ops.dense(chunk[:, None], one, None, activation,
                                    backend="numba-cpu")[0][:, 0]
                          for chunk in np.array_split(x, 8)])
    finite = ~np.isnan(ref)
    ulp = np.spacing(np.abs(ref[finite]).astype(np.float32)).astype(np.float64)
    error_in_ulp = np.abs(got[finite] - ref[finite]) / ulp
    worst = int(np.argmax(error_in_ulp))
    assert error_in_ulp[worst] <= 4, (f"{activation}({x[finite][worst]!r}) = "
                                      f"{got[finite][worst]!r}, exact {ref[finite][worst]!r}")
    assert np.isnan(got[~finite]).all()


def _whole_range(dtype):
    """Inputs over the whole float range: the float32 set above, then results down to the
    smallest subnormals (sigmoid of -80 .. -750), huge and tiny magnitudes."""
    info = np.finfo(dtype)
    exponents = np.arange(info.minexp - info.nmant, info.maxexp)
    magnitudes = np.concatenate([np.ldexp(1.0, exponents), np.ldexp(1.37, exponents[:-1])])
    return np.concatenate([_activation_inputs().astype(dtype),
                           np.linspace(-800, 0, 20_001).astype(dtype), magnitudes, -magnitudes,
                           [info.max, -info.max]]).astype(dtype)


def _exact_activation(name, x):
    """tanh or sigmoid in long double (80-bit on x86: 11 bits beyond float64)."""
    wide = x.astype(np.longdouble)
    if name == "tanh":
        return np.tanh(wide)
    e = np.exp(-np.abs(wide))
    return np.where(wide >= 0, 1, e) / (1 + e)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
@pytest.mark.parametrize("kernel", ["single", "stack"])
def test_cpu_activations_within_four_ulp_whole_range(monkeypatch, dtype, activation, kernel):
    """The branch-free tanh and sigmoid of kernels/numba_math.py, inside the compiled kernels
    (the single-model loops and the stack kernel), at most 4 ulp from the exact value, NaN
    for NaN. (x @ 1 + 0 turns -0.0 into 0.0 before the activation, so -0.0 is not tested
    here.)"""
    module = backend_module()
    for name in LIMITS:
        monkeypatch.setattr(module, name, 1 << 62)         # the loops: compiled activations
    x = _whole_range(dtype)
    one = np.ones((1, 1), dtype)
    if kernel == "single":
        got = np.concatenate([ops.dense(chunk[:, None], one, None, activation,
                                        backend="numba-cpu")[0][:, 0]
                              for chunk in np.array_split(x, 8)])
    else:                  # 21 models, each a row of x: x (21, n, 1), w (21, 1, 1)
        rows = np.resize(x, (21, -(-x.size // 21)))
        got = ops.dense(rows[:, :, None], np.ones((21, 1, 1), dtype), None, activation,
                        backend="numba-cpu")[0][:, :, 0].reshape(-1)[:x.size]
    with np.errstate(over="ignore", invalid="ignore"):
        exact = _exact_activation(activation, x)
    finite = ~np.isnan(exact)
    ulp = np.spacing(np.abs(exact[finite]).astype(dtype)).astype(np.longdouble)
    error_in_ulp = np.abs(got[finite].astype(np.longdouble) - exact[finite]) / ulp
    worst = int(np.argmax(error_in_ulp))
    assert error_in_ulp[worst] <= 4, (f"{activation}({x[finite][worst]!r}) = "
                                      f"{got[finite][worst]!r}, exact {exact[finite][worst]!r}")
    assert np.isnan(got[~finite]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_stack_kernels_activation_slopes_equal_the_scalar_definition(dtype):
    """kernels/numba_cpu/lanes.py slope(): the derivative from the output as the stack
    kernels compute it, without a branch, equals kernels/numba_math.py activation_grad (the
    definition the other CPU kernels use, compiled with the same options) bit for bit, for
    every activation, on ordinary values and on 0, -0, +-inf, NaN and subnormals."""
    import numba
    from tinynet.kernels.numba_cpu import COMPILE_OPTIONS
    from tinynet.kernels.numba_cpu.lanes import slope, slope_terms
    from tinynet.kernels.numba_math import activation_grad

    @numba.njit(**COMPILE_OPTIONS)
    def both(code, y, got, expected):
        terms = slope_terms(code, y.dtype.type(1))
        for i in range(y.size):
            got[i] = slope(y[i], terms)
        for i in range(y.size):
            expected[i] = activation_grad(code, y[i])

    info = np.finfo(dtype)
    y = np.concatenate([np.linspace(-1.5, 1.5, 301, dtype=dtype),
                        np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, info.tiny,
                                  info.tiny / 4, info.max, -info.max], dtype)])
    for code, name in enumerate(("linear", "relu", "sigmoid", "tanh")):
        got, expected = np.empty_like(y), np.empty_like(y)
        both(code, y, got, expected)
        different = ~((got == expected) | (np.isnan(got) & np.isnan(expected)))
        assert not different.any(), (name, y[different], got[different], expected[different])
        if name == "linear":
            assert (got == 1).all()                  # NaN and infinities included


@pytest.mark.parametrize("dtype", DTYPES)
def test_vector_activations_and_slopes_equal_the_scalar_ones(dtype):
    """kernels/numba_cpu/vectors.py: every activation and its slope computed on SIMD vectors
    (the stack LSTM kernel's form) equals the same function on scalars (every other CPU
    kernel's form, tested against the exact values above) bit for bit, over the whole float
    range, -0.0 and the special values included."""
    import numba
    from tinynet.kernels.numba_cpu import COMPILE_OPTIONS, LANES
    from tinynet.kernels.numba_cpu.lanes import activate, slope, slope_terms
    from tinynet.kernels.numba_cpu.vectors import load, store

    @numba.njit(**COMPILE_OPTIONS)
    def both(code, x, vector, scalar, vector_slope, scalar_slope):
        zero = x.dtype.type(0)
        terms = slope_terms(code, x.dtype.type(1))
        for row in range(x.shape[0]):
            store(vector[row], activate(code, load(x[row]), zero))
            store(vector_slope[row], slope(load(x[row]), terms))
            for lane in range(x.shape[1]):
                scalar[row, lane] = activate(code, x[row, lane], zero)
                scalar_slope[row, lane] = slope(x[row, lane], terms)

    values = np.concatenate([_whole_range(dtype), np.array([-0.0], dtype)])
    x = np.resize(values, (-(-values.size // LANES), LANES))
    for code, name in enumerate(("linear", "relu", "sigmoid", "tanh")):
        vector, scalar, vector_slope, scalar_slope = (np.empty_like(x) for _ in range(4))
        both(code, x, vector, scalar, vector_slope, scalar_slope)
        for got, expected, what in ((vector, scalar, name), (vector_slope, scalar_slope,
                                                              name + "'")):
            same_bits = got.view(f"u{x.itemsize}") == expected.view(f"u{x.itemsize}")
            both_nan = np.isnan(got) & np.isnan(expected)
            different = ~(same_bits | both_nan)
            assert not different.any(), (what, x[different][:5], got[different][:5],
                                         expected[different][:5])


# --- the module protocol -------------------------------------------------------------

def test_asarray_refuses_gpu_arrays():
    module = backend_module()

    class DeviceArray:
        __cuda_array_interface__ = {"shape": (2,), "typestr": "<f4", "data": (0, False),
                                    "version": 3}

    with pytest.raises(ValueError, match="tinynet.to_numpy"):
        module.asarray(DeviceArray())
    a = np.ones(3, np.float32)
    assert module.asarray(a) is a
    assert module.unavailable_reason() is None


def test_prefer_answers_for_every_forward_op(rng):
    module = backend_module()
    tiny = {"dense": np.ones((8, 3), np.float32), "lstm_cell": np.ones((1, 1), np.float32),
            "lstm": np.ones((1, 100, 1), np.float32)}
    for op, first_array in tiny.items():
        assert module.prefer(op, first_array) is True, f"{op}: tiny sizes are numba-cpu's"


def test_prefer_follows_the_measured_lstm_table():
    """At a large batch the LSTM goes to numba-cpu only while H is small (the table in
    tinynet/backends/numba_cpu.py); auto routes by it."""
    module = backend_module()
    big = module.AUTO_LSTM_MAX_BATCH + 1
    xs = np.ones((big, 5, 1), np.float32)
    small_h, large_h = (module.AUTO_LSTM_ANY_BATCH_MAX_HIDDEN + extra for extra in (0, 1))
    w_small, w_large = (np.ones((h, 4 * h), np.float32) for h in (small_h, large_h))
    assert module.prefer("lstm", xs, w_small) and not module.prefer("lstm", xs, w_large)
    assert module.prefer("lstm", xs[:module.AUTO_LSTM_MAX_BATCH], w_large)
    for w_hh, expected in ((w_small, "numba-cpu"), (w_large, "numpy")):
        *_, ctx = ops.lstm(xs, None, None, np.ones((1, w_hh.shape[1]), np.float32), w_hh,
                           np.zeros(w_hh.shape[1], np.float32), backend="auto")
        assert ctx.backend.NAME == expected, (w_hh.shape, ctx.backend.NAME)
    cells = np.ones((module.AUTO_CELL_MAX_BATCH + 1, 1), np.float32)
    assert not module.prefer("lstm_cell", cells, w_small)


def test_import_tinynet_does_not_import_numba():
    code = "import tinynet, sys; assert 'numba' not in sys.modules, 'numba was imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd="/")
    assert result.returncode == 0, result.stderr


def test_kernels_are_compiled_once_per_machine(tmp_path):
    # the first process compiles and writes Numba's disk cache; a second one loads it and
    # writes nothing (it would rewrite the cache files if it compiled again)
    code = ("import numpy as np; from tinynet import ops\n"
            "x = np.ones((4, 3), np.float32); w = np.ones((3, 2), np.float32)\n"
            "y, ctx = ops.dense(x, w, None, 'tanh', backend='numba-cpu')\n"
            "ops.dense_backward(ctx, y)\n"
            # a stack of one block (the one-thread twins) and one of several (prange)
            "for m in (1, 200):\n"
            "    y, ctx = ops.dense(np.ones((m, 4, 3), np.float32), np.ones((m, 3, 2), "
            "np.float32), None, 'tanh', backend='numba-cpu')\n"
            "    ops.dense_backward(ctx, y)\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))

    def run_and_list():
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                cwd="/", env=env)
        assert result.returncode == 0, result.stderr
        return {p.relative_to(tmp_path): p.stat().st_mtime_ns for p in tmp_path.rglob("*")
                if p.is_file()}

    first = run_and_list()
    written = {p.name.split("-")[0] for p in first if p.suffix == ".nbc"}
    assert {"dense.forward_loops", "dense.backward_loops", "stack_dense.forward",
            "stack_dense.forward_one_thread", "stack_dense.backward",
            "stack_dense.backward_one_thread"} <= written, sorted(first)
    assert run_and_list() == first, "the second process compiled again"


# --- stacks of models (kernels/numba_cpu/stack_dense.py, stack_lstm.py) -----------------
# Each model against the single-model NumPy op on its slices: an independent computation
# (models innermost, blocks of LANES, a block's lanes past M zero) against the plain one.

def stack_of(problems):
    """[per-model tuples of arrays] -> one tuple of stacked arrays (None stays None)."""
    return tuple(None if parts[0] is None else np.stack(parts) for parts in zip(*problems))


def single_lstm_reference(inputs, grads, forget_bias, lengths, act, rec):
    """Model by model and row by row, the single-model NumPy LSTM over the row's valid steps
    only; padding: hs and dxs zero; weight gradients summed over the model's rows."""
    xs, h0, c0, w_ih, w_hh, b = inputs
    dhs, dhT, dcT = grads
    models, batch, steps, _ = xs.shape
    out = [np.zeros_like(dhs), np.empty_like(dhT), np.empty_like(dcT), np.zeros_like(xs),
           np.empty_like(h0), np.empty_like(c0), np.zeros_like(w_ih), np.zeros_like(w_hh),
           np.zeros_like(b)]
    for m in range(models):
        for row in range(batch):
            n = int(lengths[m, row])
            one = slice(row, row + 1)
            hs, hT, cT, ctx = ops.lstm(xs[m, one, :n], h0[m, one], c0[m, one], w_ih[m],
                                       w_hh[m], b[m], act, rec, float(forget_bias[m]),
                                       backend="numpy")
            dxs, dh0, dc0, dw_ih, dw_hh, db = ops.lstm_backward(ctx, dhs[m, one, :n],
                                                                dhT[m, one], dcT[m, one])
            out[0][m, row, :n], out[1][m, row], out[2][m, row] = hs[0], hT[0], cT[0]
            out[3][m, row, :n], out[4][m, row], out[5][m, row] = dxs[0], dh0[0], dc0[0]
            out[6][m] += dw_ih
            out[7][m] += dw_hh
            out[8][m] += db
    return out


def run_stack_lstm(inputs, grads, forget_bias, lengths, act="tanh", rec="sigmoid"):
    hs, hT, cT, ctx = ops.lstm(*inputs, act, rec, forget_bias, lengths=lengths,
                               backend="numba-cpu")
    return [hs, hT, cT, *ops.lstm_backward(ctx, *grads)]


def stack_lstm_case(rng, models, batch, steps, n_in, hidden, dtype):
    problems = [lstm_problem(rng, batch, steps, n_in, hidden, dtype) for _ in range(models)]
    inputs = stack_of([p[0] for p in problems])
    grads = stack_of([p[1] for p in problems])
    forget_bias = rng.uniform(0, 2, models).astype(dtype)
    return inputs, grads, forget_bias


# (M, batch, steps, in, H): few (model, row) pairs run model by model in the single-model
# kernel; otherwise, below MAX_LANES models with more than one row, the rows run as models
# of their own unless that copies more weights than the forward saves
# (backends/numba_cpu.py _stack_lstm_route); the test checks that every route is in the list
STACK_LSTM_SHAPES = [(1, 1, 4, 1, 1), (3, 5, 3, 2, 3), (17, 2, 5, 3, 7), (50, 1, 3, 1, 3),
                     (70, 2, 3, 1, 3), (3, 4, 12, 1, 2), (2, 2, 6, 2, 9), (1, 4, 5, 3, 6)]
GATES = [("tanh", "sigmoid"), ("relu", "tanh"), ("linear", "sigmoid")]


@pytest.mark.parametrize("dtype", DTYPES)
def test_stack_lstm_matches_single_models_with_lengths(rng, dtype):
    """Lengths 0, steps and between, NaN in the padding of xs and dhs, a forget_bias per
    model, three pairs of gate activations."""
    routes = {backend_module()._stack_lstm_route(*shape)
              for shape in STACK_LSTM_SHAPES if shape[1] > 1}
    assert routes == {"per model", "rows as models", "lanes"}, \
        "a batch of rows is tested on every route"
    for index, (models, batch, steps, n_in, hidden) in enumerate(STACK_LSTM_SHAPES):
        act, rec = GATES[index % len(GATES)]
        inputs, grads, forget_bias = stack_lstm_case(rng, models, batch, steps, n_in, hidden,
                                                     dtype)
        lengths = rng.integers(0, steps + 1, (models, batch)).astype(np.int32)
        lengths.flat[0] = 0
        lengths.flat[-1] = steps
        padding = np.arange(steps)[None, None, :] >= lengths[:, :, None]
        inputs[0][padding] = np.nan
        grads[0][padding] = np.nan
        ref = single_lstm_reference(inputs, grads, forget_bias, lengths, act, rec)
        got = run_stack_lstm(inputs, grads, forget_bias, lengths, act, rec)
        assert_agree(f"stack lstm {(models, batch, steps, n_in, hidden)} {act}/{rec}", got,
                     ref, lstm_grad_scale(batch, steps))


@pytest.mark.parametrize("dtype", DTYPES)
def test_stack_dense_and_cell_match_single_models(rng, dtype):
    for models, batch, n_in, n_out in [(1, 1, 1, 1), (3, 5, 4, 3), (17, 1, 3, 7), (50, 5, 2, 2)]:
        problems = [dense_problem(rng, batch, n_in, n_out, dtype) for _ in range(models)]
        x, w, b, dy = stack_of(problems)
        for activation in ("linear", "relu", "sigmoid", "tanh"):
            for bias in (b, None):
                ref = [np.stack(parts) if parts[0] is not None else None for parts in
                       zip(*[run_dense("numpy", (p[0], p[1], None if bias is None else p[2],
                                                  p[3]), activation) for p in problems])]
                assert_agree(f"stack dense {(models, batch, n_in, n_out)} {activation} "
                             f"bias={bias is not None}",
                             run_dense("numba-cpu", (x, w, bias, dy), activation), ref,
                             np.sqrt(batch))
    for models, batch, n_in, hidden in [(1, 1, 1, 1), (3, 5, 2, 3), (17, 2, 3, 7)]:
        problems = [lstm_problem(rng, batch, None, n_in, hidden, dtype) for _ in range(models)]
        inputs, grads = stack_of([p[0] for p in problems]), stack_of([p[1] for p in problems])
        ref = [np.stack(parts) for parts in zip(*[run_cell("numpy", p) for p in problems])]
        assert_agree(f"stack cell {(models, batch, n_in, hidden)}",
                     run_cell("numba-cpu", (inputs, grads)), ref, np.sqrt(batch))


@pytest.mark.parametrize("models", [19, 2])         # the "lanes" and "per model" routes
def test_stack_any_strides_and_broadcast_data(rng, models):
    """Shared data as a broadcast view (stride 0 on M), Fortran-ordered and strided weights
    give the results of contiguous copies, bit for bit."""
    batch, steps, n_in, hidden = 2, 4, 3, 9
    inputs, grads, forget_bias = stack_lstm_case(rng, models, batch, steps, n_in, hidden,
                                                 np.float32)
    shared = np.broadcast_to(inputs[0][0], inputs[0].shape)
    dense = ops.dense(shared[:, :, 0], inputs[3][:, :, :7], None, "tanh", backend="numba-cpu")
    copied = ops.dense(np.ascontiguousarray(shared[:, :, 0]),
                       np.ascontiguousarray(inputs[3][:, :, :7]), None, "tanh",
                       backend="numba-cpu")
    assert np.array_equal(dense[0], copied[0])
    for got, want in zip(ops.dense_backward(dense[1], dense[0]),
                         ops.dense_backward(copied[1], copied[0])):
        assert (got is None and want is None) or np.array_equal(got, want)
    strided_inputs = (shared, *(variants(a)["fortran" if a.ndim == 3 else "strided"]
                                for a in inputs[1:]))
    contiguous = tuple(np.ascontiguousarray(a) for a in strided_inputs)
    got = run_stack_lstm(strided_inputs, grads, forget_bias, None)
    want = run_stack_lstm(contiguous, grads, forget_bias, None)
    for index, (g, w) in enumerate(zip(got, want)):
        assert np.array_equal(g, w), f"stack lstm output {index} depends on the strides"
    assert got[3].shape == shared.shape and got[3].flags.writeable


@pytest.mark.parametrize("dtype", DTYPES)
def test_stack_lstm_backward_skips_only_an_all_zero_dhs(rng, dtype):
    """ops fills a None input of a stack op with numba-cpu's stack_zeros (read-only, every
    stride 0), which the stack backward does not read as dhs; any other dhs, a broadcast
    non-zero one included, is read as given; None states and gradients are zeros on every
    route. Lengths with padding."""
    module = backend_module()
    zeros = module.stack_zeros((2, 3), dtype)
    assert zeros.dtype == dtype and not zeros.flags.writeable and not zeros.any()
    shapes = [(19, 1, 6, 1, 3), (3, 4, 12, 1, 2), (2, 2, 6, 2, 9)]
    assert {module._stack_lstm_route(*shape) for shape in shapes} == {
        "lanes", "rows as models", "per model"}
    for shape in shapes:
        models, batch, steps = shape[:3]
        inputs, grads, forget_bias = stack_lstm_case(rng, *shape, dtype)
        lengths = rng.integers(0, steps + 1, (models, batch)).astype(np.int32)
        _, dhT, dcT = grads
        route = module._stack_lstm_route(*shape)
        none = run_stack_lstm(inputs, (None, dhT, dcT), forget_bias, lengths)
        explicit = run_stack_lstm(inputs, (np.zeros(grads[0].shape, dtype), dhT, dcT),
                                  forget_bias, lengths)
        for index, (a, b) in enumerate(zip(none, explicit)):
            assert np.array_equal(a, b), f"{route}: output {index}, dhs None vs zeros"
        quarter = dtype(0.25)
        broadcast = run_stack_lstm(inputs, (np.broadcast_to(quarter, grads[0].shape), dhT,
                                            dcT), forget_bias, lengths)
        full = run_stack_lstm(inputs, (np.full(grads[0].shape, quarter), dhT, dcT),
                              forget_bias, lengths)
        for index, (a, b) in enumerate(zip(broadcast, full)):
            assert np.array_equal(a, b), f"{route}: output {index}, broadcast dhs vs a copy"
        assert not np.array_equal(broadcast[6], none[6]), f"{route}: dhs was not read"
        xs, h0, c0, *weights = inputs
        all_none = run_stack_lstm((xs, None, None, *weights), (None, None, None), forget_bias,
                                  lengths)
        all_zeros = run_stack_lstm((xs, np.zeros_like(h0), np.zeros_like(c0), *weights),
                                   [np.zeros_like(g) for g in grads], forget_bias, lengths)
        for index, (a, b) in enumerate(zip(all_none, all_zeros)):
            assert np.array_equal(a, b), f"{route}: output {index}, None states and gradients"


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_stack_nan_in_one_model_reaches_no_other(rng, monkeypatch):
    module = backend_module()
    monkeypatch.setattr(module, "_lanes", lambda models: module.LANES)   # blocks of 16
    models = 20                                # two blocks, the NaN in each
    inputs, grads, forget_bias = stack_lstm_case(rng, models, 2, 5, 2, 3, np.float64)
    clean = run_stack_lstm(inputs, grads, forget_bias, None)
    sick = [a.copy() for a in inputs]
    for m in (3, 17):
        sick[0][m, 0, 1, 0] = np.nan
        sick[4][m, 0, 0] = np.inf
    got = run_stack_lstm(sick, grads, forget_bias, None)
    others = [m for m in range(models) if m not in (3, 17)]
    for index, (g, c) in enumerate(zip(got, clean)):
        assert np.array_equal(g[others], c[others]), f"output {index}: NaN crossed models"
        assert np.isnan(g[[3, 17]]).any(), f"output {index}: the NaN vanished"


@pytest.mark.parametrize("dtype", DTYPES)
def test_stack_zero_sizes(rng, dtype):
    for models, batch, steps, n_in, hidden in [(0, 2, 3, 1, 2), (3, 0, 3, 1, 2),
                                               (3, 2, 0, 1, 2), (3, 2, 3, 0, 2)]:
        inputs, grads, forget_bias = stack_lstm_case(rng, max(models, 1), batch, steps, n_in,
                                                     hidden, dtype)
        inputs, grads, forget_bias = (tuple(a[:models] for a in inputs),
                                      tuple(a[:models] for a in grads), forget_bias[:models])
        lengths = np.full((models, batch), steps, np.int32)
        got = run_stack_lstm(inputs, grads, forget_bias, lengths)
        ref = single_lstm_reference(inputs, grads, forget_bias, lengths, "tanh", "sigmoid")
        assert_agree(f"stack lstm {(models, batch, steps, n_in, hidden)}", got, ref, 1.0)


def test_auto_sends_stacks_of_tiny_models_to_numba_cpu_and_larger_ones_to_numpy():
    """The stack rows of the table in tinynet/backends/numba_cpu.py: numba-cpu's
    models-innermost loops while each model is tiny, NumPy's batched matmuls above."""
    module = backend_module()
    small_h, large_h = (module.AUTO_STACK_LSTM_MAX_HIDDEN + extra for extra in (0, 1))
    # (M, batch, H): as a single model's LSTM, numpy only for a large batch and a large H
    small_batch = module.AUTO_LSTM_MAX_BATCH
    for models, batch, hidden, expected in ((3, small_batch + 1, small_h, "numba-cpu"),
                                            (3, small_batch + 1, large_h, "numpy"),
                                            (3, small_batch, large_h, "numba-cpu"),
                                            (1, small_batch + 1, 4 * large_h, "numpy")):
        *_, ctx = ops.lstm(np.ones((models, batch, 4, 1), np.float32), None, None,
                           np.ones((models, 1, 4 * hidden), np.float32),
                           np.ones((models, hidden, 4 * hidden), np.float32),
                           np.zeros((models, 4 * hidden), np.float32), backend="auto")
        assert ctx.backend.NAME == expected, (models, batch, hidden, ctx.backend.NAME)
    for batch, expected in ((8, "numba-cpu"), (256, "numpy")):
        _, ctx = ops.dense(np.ones((4, batch, 8), np.float32), np.ones((4, 8, 8), np.float32),
                           backend="auto")
        assert ctx.backend.NAME == expected, (batch, ctx.backend.NAME)
