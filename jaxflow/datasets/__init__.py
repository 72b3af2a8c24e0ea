"""Built-in data sets: synthetic separable data, the papers' toys, MNIST, and Gaussian
inputs labelled by a teacher (infinite data, or sampled)."""

from ._mnist import mnist as mnist
from ._synthetic import (
    boursier_flammarion as boursier_flammarion,
    circle_clusters as circle_clusters,
    orthogonal as orthogonal,
    separable as separable,
    two_points as two_points,
)
from ._teacher import GaussianTeacher as GaussianTeacher


__all__ = [
    "mnist",
    "boursier_flammarion",
    "circle_clusters",
    "orthogonal",
    "separable",
    "two_points",
    "GaussianTeacher",
]
