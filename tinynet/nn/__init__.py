"""tinynet.nn: a small, Keras-familiar model layer built only on tinynet.ops.

    from tinynet import nn
    model = nn.Sequential([nn.Dense(3, 8, "tanh"), nn.Dense(8, 1, "tanh")])
    model.compile(optimizer=nn.SGD(0.5), loss="mse")
    model.fit(x, y, epochs=2000, batch_size=8, verbose=0)

Layers: Dense, LSTM, Conv1D, Embedding, GlobalPool1D, Concatenate, Sum.
Models: Sequential, Model (functional: Input -> layer calls -> outputs, any DAG); Stack (M
models of one architecture trained at once, with per-model data, lengths and learning rates).
Training: losses MSE, RMSE, BinaryCrossentropy, CategoricalCrossentropy,
SparseCategoricalCrossentropy (on a Dense(..., 'softmax') output, or from_logits=True),
SoftmaxCrossentropy; metrics 'accuracy', 'mae', 'mse', 'rmse'; optimizers SGD, Adam, RMSprop;
EarlyStopping; checkpoints (fit(checkpoint=..., resume=True)); fit stops at the first
inf/NaN loss (NonFiniteLoss) unless stop_on_nonfinite=False.
Sequences of different lengths: nn.pad_sequences, and lengths= on a model's fit, predict,
evaluate, train_on_batch and call (every LSTM layer stops at each sequence's length).
Weights: model.save / model.load (.npz, atomic, never unpickled),
model.load_torch_state_dict. Reproducibility: nn.set_seed(n) or seed= on layers/compile.
"""

from tinynet.nn import initializers
from tinynet.nn.graph import Input, Tensor
from tinynet.nn.initializers import set_seed
from tinynet.nn.layers import (LSTM, Concatenate, Conv1D, Dense, Embedding, GlobalPool1D,
                               Layer, Parameter, Sum)
from tinynet.nn.losses import (MSE, RMSE, BinaryCrossentropy, CategoricalCrossentropy, Loss,
                               SoftmaxCrossentropy, SparseCategoricalCrossentropy)
from tinynet.nn.model import Model, Sequential
from tinynet.nn.optimizers import SGD, Adam, Optimizer, RMSprop
from tinynet.nn.sequences import pad_sequences
from tinynet.nn.stack import Stack
from tinynet.nn.training import EarlyStopping, History, NonFiniteLoss

__all__ = ["Dense", "LSTM", "Conv1D", "Embedding", "GlobalPool1D", "Concatenate", "Sum",
           "Layer", "Parameter", "Input", "Tensor", "Model", "Sequential",
           "MSE", "RMSE", "BinaryCrossentropy", "CategoricalCrossentropy",
           "SparseCategoricalCrossentropy", "SoftmaxCrossentropy", "Loss",
           "SGD", "Adam", "RMSprop", "Optimizer", "EarlyStopping", "History", "NonFiniteLoss",
           "initializers", "set_seed", "pad_sequences", "Stack"]
