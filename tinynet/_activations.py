"""Activation names and their canonical form.

Every backend receives the canonical name ("linear", "relu", "sigmoid", "tanh") or, for
compiled kernels, its integer code. Each activation's derivative is a function of its
*output* y, so forward passes save outputs only:

    linear  y = z                 dy/dz = 1
    relu    y = max(z, 0)         dy/dz = (y > 0)
    sigmoid y = 1 / (1 + e^-z)    dy/dz = y (1 - y)
    tanh    y = tanh(z)           dy/dz = 1 - y^2
"""

ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh")

# Integer codes for compiled kernels (Numba and CUDA C use the same numbers).
CODES = {"linear": 0, "relu": 1, "sigmoid": 2, "tanh": 3}

ALIASES = {None: "linear", "linear": "linear", "identity": "linear",
            "relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh"}


def canonical(name, argument="activation", op="tinynet"):
    """Return the canonical activation name, or raise ValueError listing the valid ones."""
    try:
        return ALIASES[name]
    except (KeyError, TypeError):
        pass
    valid = ", ".join(repr(a) for a in ("linear", "identity", "relu", "sigmoid", "tanh"))
    raise ValueError(f"{op}: {argument}={name!r} is not an activation; "
                     f"valid ones are {valid} and None (= 'linear')")
