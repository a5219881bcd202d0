"""bench/stack_update.py: its three layers (nn.Stack, ops, backend) make the same updates as
the single-model ops, model by model, so the table compares the same work."""

import numpy as np

from tinynet.bench import stack_suite, stack_update

from conftest import USABLE
from test_bench_stack import assert_same_weights, trained, updates


def test_nn_stack_ops_and_backend_layers_train_the_same_weights():
    xs, targets, params = stack_suite.problem(models=3, pool=2)
    expected = updates(stack_suite.one_at_a_time("numpy", params), xs, targets)
    assert not np.allclose(expected[1], params[1]), "two updates changed nothing"
    for backend in ["numpy"] + (["numba-cpu"] if USABLE["numba-cpu"] else []):
        fit = stack_update.nn_stack(backend, params)
        fit(*stack_update.example_layout(xs, targets))    # both sequences, an update each
        assert_same_weights(f"nn.Stack on {backend}", trained(fit), expected)
        got = updates(stack_update.backend_stack(backend, params), xs, targets)
        assert_same_weights(f"backend {backend}", got, expected)
