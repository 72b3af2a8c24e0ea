"""Models: `equinox.Module`s acting on one sample `(d,)` or a data matrix `(n, d)`."""

from ._chain import NeuronChain as NeuronChain
from ._linear import Linear as Linear
from ._mlp import MLP as MLP
from ._two_layer import TwoLayerReLU as TwoLayerReLU


__all__ = [
    "NeuronChain",
    "Linear",
    "MLP",
    "TwoLayerReLU",
]
