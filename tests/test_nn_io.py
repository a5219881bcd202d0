"""Weights in and out: save/load round trip, atomic writes (a process killed mid-save leaves
the previous file loadable), untrusted files (truncated, corrupt, wrong names/shapes/dtypes,
pickles) refused with the model left unchanged, checkpoints that resume bit-identically,
and PyTorch weight import giving PyTorch's outputs."""

import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tinynet import nn

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch not installed "
                                 "(pip install torch) - needed only to compare against it")


def small_model(seed=0, dtype="float32", width=5):
    return nn.Sequential([nn.LSTM(2, 3, seed=seed, dtype=dtype),
                          nn.Dense(3, width, "tanh", seed=seed + 1, dtype=dtype)])


def same_weights(a, b):
    wa, wb = a.get_weights(), b.get_weights()
    return wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)


def test_save_load_round_trip(tmp_path):
    path = tmp_path / "weights.npz"
    source, target = small_model(0), small_model(7)
    assert not same_weights(source, target)
    source.save(path)
    target.load(path)
    assert same_weights(source, target)
    x = np.random.default_rng(0).standard_normal((2, 4, 2)).astype(np.float32)
    np.testing.assert_array_equal(source.predict(x), target.predict(x))
    assert sorted(os.listdir(tmp_path)) == ["weights.npz"]        # no temporary left behind


KILLED_SAVE = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_nn_io import small_model
    model = small_model(seed=99)                      # other weights than the saved file
    if {where!r} == "before_rename":                  # all bytes written, not yet renamed
        os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
    else:                                             # half the bytes written
        def half_written(f, **arrays):
            f.write(b"PK\\x03\\x04" + b"\\0" * 200)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        np.savez = half_written
    model.save({path!r})
""")


@pytest.mark.parametrize("where", ["before_rename", "mid_write"])
def test_killed_mid_save_leaves_previous_file(tmp_path, where):
    path = str(tmp_path / "model.npz")
    saved = small_model(seed=0)
    saved.save(path)
    script = KILLED_SAVE.format(tests=os.path.dirname(__file__), where=where, path=path)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == -9, proc.stderr            # really killed inside save
    assert any(n.endswith(".tmp") for n in os.listdir(tmp_path))   # it had started writing
    loaded = small_model(seed=5)
    loaded.load(path)
    assert same_weights(saved, loaded)


def _expect_refused(model, path, *fragments):
    before = model.get_weights()
    with pytest.raises(ValueError) as info:
        model.load(path)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    after = model.get_weights()
    assert all(np.array_equal(before[k], after[k]) for k in before)    # unchanged
    return str(info.value)


def test_truncated_and_corrupt_files_are_refused(tmp_path):
    path = tmp_path / "w.npz"
    small_model(0).save(path)
    data = path.read_bytes()
    model = small_model(3)
    (tmp_path / "truncated.npz").write_bytes(data[:len(data) // 2])
    _expect_refused(model, tmp_path / "truncated.npz", "truncated or corrupt")
    corrupt = bytearray(data)
    kernel_at = data.index(b"\x93NUMPY", data.index(b"dense/kernel")) + 128
    corrupt[kernel_at:kernel_at + 8] = b"\xff" * 8                 # inside the array data
    (tmp_path / "corrupt.npz").write_bytes(bytes(corrupt))
    _expect_refused(model, tmp_path / "corrupt.npz", "CRC")
    (tmp_path / "empty.npz").write_bytes(b"")
    _expect_refused(model, tmp_path / "empty.npz", "is not a tinynet weights file", "is empty")


def test_wrong_names_shapes_dtypes_are_refused(tmp_path):
    model = small_model(0)
    nn.Sequential([nn.Dense(3, 5, name="other")]).save(tmp_path / "names.npz")
    text = _expect_refused(model, tmp_path / "names.npz", "missing weight 'lstm/kernel'",
                           "weights the model does not have: ['other/bias', 'other/kernel']")
    assert "Nothing was loaded" in text
    small_model(0, width=4).save(tmp_path / "shape.npz")
    _expect_refused(model, tmp_path / "shape.npz", "'dense/kernel' has shape (3, 4) in the "
                    "file, the model's is (3, 5)")
    small_model(0, dtype="float64").save(tmp_path / "dtype.npz")
    _expect_refused(model, tmp_path / "dtype.npz", "is float64 in the file, the model's is float32")
    np.savez(tmp_path / "plain.npz", **small_model(0).get_weights())
    _expect_refused(model, tmp_path / "plain.npz", "not a tinynet file")


def test_pickles_are_never_loaded(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(tmp_path / "evil.npz", "wb") as f:
        pickle.dump(Exploit(), f)
    model = small_model(0)
    _expect_refused(model, tmp_path / "evil.npz", "a Python pickle, which tinynet never loads")
    arrays = {"__tinynet__": np.array("tinynet-weights-1"),
              "lstm/kernel": np.array([Exploit()], dtype=object)}
    np.savez(tmp_path / "objects.npz", **arrays)
    text = _expect_refused(model, tmp_path / "objects.npz", "'lstm/kernel' holds Python objects",
                           "tinynet never unpickles")
    assert "allow_pickle" not in text
    assert not marker.exists()


# --- checkpoints --------------------------------------------------------------------------

class Interrupted(Exception):
    pass


def _fit(model, data, path, resume=False):
    x, y = data
    return model.fit(x, y, epochs=4, batch_size=7, validation_split=0.2, verbose=0,
                     early_stopping=nn.EarlyStopping(patience=100, restore_best_weights=True),
                     checkpoint=str(path), checkpoint_every=3, resume=resume)


def _compiled(seed):
    model = small_model(seed, width=1)
    model.compile(nn.Adam(0.01), "mse", metrics=["mae"], seed=seed)
    return model


def test_resume_is_bit_identical(tmp_path):
    rng = np.random.default_rng(1)
    data = (rng.standard_normal((40, 5, 2)).astype(np.float32),
            rng.standard_normal((40, 1)).astype(np.float32))
    reference = _compiled(0)
    expected = _fit(reference, data, tmp_path / "a.npz").history

    interrupted = _compiled(0)
    real_step, calls = interrupted.optimizer.step, []

    def step_then_fail(params):            # dies in the 2nd epoch, after the 9th checkpoint step
        calls.append(1)
        if len(calls) == 11:
            raise Interrupted()
        real_step(params)
    interrupted.optimizer.step = step_then_fail
    with pytest.raises(Interrupted):
        _fit(interrupted, data, tmp_path / "b.npz")

    resumed = _compiled(42)                # other initial weights and shuffling seed
    history = _fit(resumed, data, tmp_path / "b.npz", resume=True).history
    assert same_weights(reference, resumed)
    assert history == expected
    assert resumed.optimizer.iterations == reference.optimizer.iterations

    # a checkpoint of another fit is refused, and the model is left as it was
    other = _compiled(5)
    before = other.get_weights()
    with pytest.raises(ValueError, match="batch_size"):
        other.fit(*data, epochs=4, batch_size=8, validation_split=0.2, verbose=0,
                  checkpoint=str(tmp_path / "a.npz"), resume=True)
    assert all(np.array_equal(before[k], v) for k, v in other.get_weights().items())
    # the two final checkpoints agree bit for bit: weights, optimizer state, position
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        assert any(k.startswith("optimizer/m/") for k in a.files)
        for key in a.files:
            assert np.array_equal(a[key], b[key]), key
    loaded = small_model(9, width=1)
    loaded.load(tmp_path / "a.npz")        # a checkpoint's weights load like a save
    with np.load(tmp_path / "a.npz") as saved:
        assert all(np.array_equal(saved[k], v) for k, v in loaded.get_weights().items())


def test_a_damaged_checkpoint_restores_nothing(tmp_path):
    # every part of the file is checked before anything is assigned: a bad step count or a
    # fit state without its early-stopping entries leaves the model as it was
    rng = np.random.default_rng(2)
    data = (rng.standard_normal((40, 5, 2)).astype(np.float32),
            rng.standard_normal((40, 1)).astype(np.float32))
    _fit(_compiled(0), data, tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as good:
        arrays = {k: good[k] for k in good.files}
    state = json.loads(str(arrays["fit/state"]))
    del state["early_stopping"]["wait"]
    damaged = {"iterations": dict(arrays, **{"optimizer/iterations": np.array(-3)}),
               "early_stopping/wait": dict(arrays, **{"fit/state": np.array(json.dumps(state))})}
    for what, contents in damaged.items():
        np.savez(tmp_path / "bad.npz", **contents)
        model = _compiled(7)
        before = model.get_weights()
        with pytest.raises(ValueError, match=what):
            _fit(model, data, tmp_path / "bad.npz", resume=True)
        assert all(np.array_equal(before[k], v) for k, v in model.get_weights().items()), what


# --- PyTorch --------------------------------------------------------------------------------

@needs_torch
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_lstm_and_linear_import_gives_the_same_outputs(dtype):
    torch.manual_seed(0)
    torch_dtype = getattr(torch, dtype)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(3, 5, batch_first=True)
            self.head = torch.nn.Linear(5, 2)

        def forward(self, x):
            hs, _ = self.rnn(x)
            return hs, self.head(hs[:, -1])

    net = Net().to(torch_dtype)
    x = np.random.default_rng(0).standard_normal((4, 7, 3)).astype(dtype)
    with torch.no_grad():
        hs_ref, out_ref = (t.numpy() for t in net(torch.from_numpy(x)))

    inp = nn.Input((7, 3))
    hs = nn.LSTM(3, 5, return_sequences=True, name="lstm", dtype=dtype)(inp)
    out = nn.Dense(5, 2, name="out", dtype=dtype)(nn.LSTM(3, 5, name="last", dtype=dtype)(inp))
    model = nn.Model(inp, [hs, out])
    model.load_torch_state_dict(net.state_dict(), {"lstm": "rnn", "last": "rnn", "out": "head"})
    hs_ours, out_ours = model.predict(x)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == "float32" else dict(rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(hs_ours, hs_ref, **tol)
    np.testing.assert_allclose(out_ours, out_ref, **tol)


@needs_torch
def test_torch_import_checks_before_changing_anything():
    model = nn.Sequential([nn.LSTM(3, 5, name="rnn"), nn.Dense(5, 2, name="head")])
    before = model.get_weights()
    wrong = {k: v for k, v in torch.nn.LSTM(3, 4).state_dict().items()}
    wrong = {f"rnn.{k}": v for k, v in wrong.items()}
    wrong.update({f"head.{k}": v for k, v in torch.nn.Linear(5, 2).state_dict().items()})
    with pytest.raises(ValueError, match=r"kernel would be \(3, 16\).*\(3, 20\)"):
        model.load_torch_state_dict(wrong)
    with pytest.raises(ValueError, match="one-layer"):
        model.load_torch_state_dict({f"rnn.{k}": v for k, v in
                                     torch.nn.LSTM(3, 5, num_layers=2).state_dict().items()},
                                    {"rnn": "rnn"})
    assert all(np.array_equal(before[k], v) for k, v in model.get_weights().items())


def test_set_weights_checks_everything_first():
    model = small_model(0)
    before = model.get_weights()
    good = np.zeros((3, 5))
    with pytest.raises(ValueError, match=r"kernel must be \(2, 12\), got \(2, 2\)"):
        model.set_weights({"dense/kernel": good, "lstm/kernel": np.zeros((2, 2))})
    assert all(np.array_equal(before[k], v) for k, v in model.get_weights().items())
    model.set_weights({"dense/kernel": good})
    assert model.get_weights()["dense/kernel"].dtype == np.float32
    assert not model.get_weights()["dense/kernel"].any()


@needs_torch
def test_torch_sequential_loads_layer_by_layer_in_order():
    """torch.nn.Sequential names its layers '0', '2' ...: they are matched in order."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    model = nn.Sequential([nn.Dense(3, 4, "tanh"), nn.Dense(4, 2)])
    model.load_torch_state_dict(net.state_dict())
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-5, atol=1e-6)


def _linear_state(prefix, n_in, n_out, bias=True):
    rng = np.random.default_rng(n_in * 10 + n_out)
    state = {f"{prefix}.weight": rng.standard_normal((n_out, n_in)).astype(np.float32)}
    if bias:
        state[f"{prefix}.bias"] = rng.standard_normal(n_out).astype(np.float32)
    return state


def test_torch_in_order_import_without_torch_installed():
    """State dicts of NumPy arrays take the same path (torch is not needed to import)."""
    state = {**_linear_state("0", 3, 4), **_linear_state("2", 4, 2)}
    model = nn.Sequential([nn.Dense(3, 4, "tanh"), nn.Dense(4, 2)])
    model.load_torch_state_dict(state)
    weights = model.get_weights()
    np.testing.assert_array_equal(weights["dense/kernel"], state["0.weight"].T)
    np.testing.assert_array_equal(weights["dense_1/bias"], state["2.bias"])


def test_torch_in_order_import_refuses_what_does_not_pair_up():
    model = nn.Sequential([nn.Dense(3, 4, "tanh"), nn.Dense(4, 2)])
    before = model.get_weights()
    three = {**_linear_state("0", 3, 4), **_linear_state("1", 4, 4), **_linear_state("2", 4, 2)}
    with pytest.raises(ValueError) as info:
        model.load_torch_state_dict(three)
    text = str(info.value)
    for fragment in ("2 layers with weights", "3 modules", "'1.weight' (4, 4)", "mapping={"):
        assert fragment in text, text
    swapped = {**_linear_state("0", 4, 2), **_linear_state("1", 3, 4)}
    with pytest.raises(ValueError, match=r"(?s)kernel would be \(4, 2\).*mapping=\{'dense': "
                                         r"'1', 'dense_1': '0'\}"):
        model.load_torch_state_dict(swapped)
    lstm_first = nn.Sequential([nn.LSTM(3, 4), nn.Dense(4, 2)])
    with pytest.raises(ValueError, match="LSTM layer 'lstm' is matched with '0', an nn.Linear"):
        lstm_first.load_torch_state_dict({**_linear_state("0", 3, 16), **_linear_state("1", 4, 2)})
    assert all(np.array_equal(before[k], v) for k, v in model.get_weights().items())


def test_a_corrupt_header_is_not_a_tinynet_file_and_unpickling_is_never_suggested(tmp_path):
    path = tmp_path / "w.npz"
    small_model(0).save(path)
    data = path.read_bytes()
    model = small_model(3)
    for name, damaged in (("header.npz", b"\0\0\0\0" + data[4:]),
                          ("text.npz", b"hello, not weights\n")):
        (tmp_path / name).write_bytes(damaged)
        text = _expect_refused(model, tmp_path / name, "is not a tinynet weights file",
                               "zip archive")
        for advice in ("allow_pickle", "unsafe", "pickle.load", "trust"):
            assert advice not in text, text
