"""The stack suite (bench/stack_suite.py): every implementation trains the same weights, and
its targets are read from the right peers."""

import importlib.util

import numpy as np
import pytest

from tinynet.bench import report, stack_suite

from conftest import USABLE


def trained(train):
    return train.current() if hasattr(train, "current") else train.params


def assert_same_weights(case, got, expected):
    for k, (a, b) in enumerate(zip(got, expected)):
        np.testing.assert_allclose(np.asarray(a), b, rtol=2e-4, atol=2e-6,
                                   err_msg=f"{case}: weight {k}")


def updates(train, xs, targets, convert=lambda a: a):
    for k in range(2):
        train(convert(xs[k]), convert(targets[k]))
    return trained(train)


def test_stack_and_one_at_a_time_train_the_same_weights():
    xs, targets, params = stack_suite.problem(models=3, pool=2)
    expected = updates(stack_suite.one_at_a_time("numpy", params), xs, targets)
    assert not np.allclose(expected[3], params[3]), "two updates changed nothing"
    backends = ["numpy"] + (["numba-cpu"] if USABLE["numba-cpu"] else [])
    for backend in backends:
        got = updates(stack_suite.tinynet_stack(backend, params), xs, targets)
        assert_same_weights(f"stack on {backend}", got, expected)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="PyTorch is not installed (an optional bench peer, not in the test "
                           "extra)")
def test_torch_bmm_peer_trains_the_same_weights():
    import torch
    xs, targets, params = stack_suite.problem(models=3, pool=2)
    expected = updates(stack_suite.tinynet_stack("numpy", params), xs, targets)
    got = updates(stack_suite.torch_stack(torch, params), xs, targets, torch.from_numpy)
    assert_same_weights("torch bmm", got, expected)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                    reason="JAX is not installed (an optional bench peer, not in the test "
                           "extra)")
def test_jax_vmap_peer_trains_the_same_weights():
    import jax
    xs, targets, params = stack_suite.problem(models=3, pool=2)
    expected = updates(stack_suite.tinynet_stack("numpy", params), xs, targets)
    got = updates(stack_suite.jax_stack(jax, params), xs, targets, jax.numpy.asarray)
    assert_same_weights("jax vmap", got, expected)


def test_stack_targets_compare_with_the_named_peers():
    def row(impl, seconds):
        return report.make_row("stack", "S7 stack", "M256", "model-sequence", impl, seconds,
                               flops=1.0, bytes_moved=1.0,
                               peaks={"flops_per_s": 1e9, "bytes_per_s": 1e9}, repeats=3)
    rows = report.add_ratios([row("tinynet:numba-cpu", 1e-6),
                              row("tinynet:numba-cpu one at a time", 20e-6),
                              row("torch-cpu bmm", 30e-6), row("jax-cpu vmap", 4e-6)])
    found = {(t["target"].split(">= ")[1], t["impl"]): t for t in report.targets(rows)}
    assert {impl for _, impl in found} == {"tinynet:numba-cpu"}
    assert found[("10x one model at a time", "tinynet:numba-cpu")]["value"] == pytest.approx(20)
    assert found[("10x one model at a time", "tinynet:numba-cpu")]["met"]
    assert found[("40x PyTorch (batched bmm)", "tinynet:numba-cpu")]["value"] == \
        pytest.approx(30)
    assert not found[("40x PyTorch (batched bmm)", "tinynet:numba-cpu")]["met"]
    assert found[("5x JAX (vmap, jit)", "tinynet:numba-cpu")]["value"] == pytest.approx(4)
