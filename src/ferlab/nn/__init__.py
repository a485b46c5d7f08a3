"""The NumPy neural-network engine: layers, fully connected nets, update rules and the Solver."""

from ferlab.nn.fc_net import FullyConnectedNet
from ferlab.nn.layers import (
    dropout_backward,
    dropout_forward,
    linear_backward,
    linear_forward,
    relu_backward,
    relu_forward,
    softmax,
    softmax_loss,
)
from ferlab.nn.model_io import load_fully_connected
from ferlab.nn.preprocess import Preprocessor
from ferlab.nn.solver import Solver

__all__ = [
    "FullyConnectedNet",
    "Preprocessor",
    "Solver",
    "dropout_backward",
    "dropout_forward",
    "linear_backward",
    "linear_forward",
    "load_fully_connected",
    "relu_backward",
    "relu_forward",
    "softmax",
    "softmax_loss",
]
