"""tinynet.nn: a small, Keras-familiar model layer built only on tinynet.ops.

    from tinynet import nn
    model = nn.Sequential([nn.Dense(3, 8, "tanh"), nn.Dense(8, 1, "tanh")])
    model.compile(optimizer=nn.SGD(0.5), loss="mse")
    model.fit(x, y, epochs=2000, batch_size=8, verbose=0)

Layers: Dense, LSTM, Conv1D, Embedding, GlobalPool1D, Concatenate, Sum.
Models: Sequential, Model (functional: Input -> layer calls -> outputs, any DAG).
Training: losses MSE, RMSE, BinaryCrossentropy, SoftmaxCrossentropy; optimizers SGD, Adam,
RMSprop; EarlyStopping; checkpoints (fit(checkpoint=..., resume=True)).
Weights: model.save / model.load (.npz, atomic, never unpickled),
model.load_torch_state_dict. Reproducibility: nn.set_seed(n) or seed= on layers/compile.
"""

from tinynet.nn import initializers
from tinynet.nn.graph import Input, Tensor
from tinynet.nn.initializers import set_seed
from tinynet.nn.layers import (LSTM, Concatenate, Conv1D, Dense, Embedding, GlobalPool1D,
                               Layer, Parameter, Sum)
from tinynet.nn.losses import MSE, RMSE, BinaryCrossentropy, Loss, SoftmaxCrossentropy
from tinynet.nn.model import Model, Sequential
from tinynet.nn.optimizers import SGD, Adam, Optimizer, RMSprop
from tinynet.nn.training import EarlyStopping, History

__all__ = ["Dense", "LSTM", "Conv1D", "Embedding", "GlobalPool1D", "Concatenate", "Sum",
           "Layer", "Parameter", "Input", "Tensor", "Model", "Sequential",
           "MSE", "RMSE", "BinaryCrossentropy", "SoftmaxCrossentropy", "Loss",
           "SGD", "Adam", "RMSprop", "Optimizer", "EarlyStopping", "History",
           "initializers", "set_seed"]
