"""S6: Conv1D on a time series, 6 filters of width 10, summed into one output series.

The seed feeds a 1-D series of 100 values to Keras' Conv1D and gets "expected ndim=3, found
ndim=2". A batch of sequences has three axes, (batch, steps, channels): samples, positions
in time, values per position. One series of 100 single values is (1, 100, 1); a thousand of
them are (1000, 100, 1). tinynet says exactly that, with the fix. The sum of the 6 filter
outputs is a layer (nn.Sum), not a Lambda workaround.

The target here is the input passed through a fixed 10-tap filter (with the same "same"
alignment), which the 6 summed filters can represent exactly, so the error goes to ~0.

    python examples/s6_conv1d.py [--epochs 30]
"""

import argparse
import time

import numpy as np

import tinynet
from tinynet import nn

STEPS, WIDTH, FILTERS = 100, 10, 6


def filtered(x, taps):
    """y[b, t] = sum_j taps[j] x[b, t + j - 4], zero outside: Keras' 'same' for width 10."""
    padded = np.pad(x[:, :, 0], ((0, 0), (4, 5)))
    return sum(taps[j] * padded[:, j:j + STEPS] for j in range(WIDTH)).astype(np.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    nn.set_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    taps = rng.standard_normal(WIDTH) / np.sqrt(WIDTH)
    series = rng.standard_normal((args.samples, STEPS)).astype(np.float32)   # the seed's (n, 100)
    print(f"default backend {tinynet.get_backend()!r}; {args.samples} series of {STEPS} "
          "values")

    model = nn.Sequential([nn.Conv1D(1, FILTERS, WIDTH, padding="same"), nn.Sum(axis=-1)])
    model.compile(optimizer=nn.Adam(0.01), loss="mse")

    print(f"\nThe seed's input, shape {series.shape}:")
    try:
        model.fit(series, filtered(series[..., None], taps), epochs=1, verbose=0)
    except ValueError as error:
        print(f"  ValueError: {error}")

    x = series[..., None]                                     # (n, 100, 1)
    y = filtered(x, taps)                                     # (n, 100)
    print(f"\nwith x[..., None], shape {x.shape}: Conv1D -> {model.layers[0].output_shape(x.shape)}"
          f", Sum(axis=-1) -> {model.layers[1].output_shape((None, STEPS, FILTERS))}")
    started = time.perf_counter()
    history = model.fit(x, y, epochs=args.epochs, batch_size=32, validation_split=0.2,
                        verbose=0)
    seconds = time.perf_counter() - started
    print(f"mse: first epoch {history.history['loss'][0]:.4f}, last epoch "
          f"{history.history['loss'][-1]:.2e}, held out {history.history['val_loss'][-1]:.2e} "
          f"(target variance {y.var():.3f}); {seconds:.1f} s on "
          f"{', '.join(model.backend_used())}")
    kernel = tinynet.to_numpy(model.layers[0].kernel.value)          # (10, 1, 6)
    print("sum of the 6 learnt filters vs the true taps (largest difference "
          f"{np.abs(kernel.sum(axis=(1, 2)) - taps).max():.1e})")


if __name__ == "__main__":
    main()
