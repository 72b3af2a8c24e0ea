"""Built-in data sets: synthetic separable data, the papers' toys, and MNIST."""

from ._mnist import mnist as mnist
from ._synthetic import (
    boursier_flammarion as boursier_flammarion,
    circle_clusters as circle_clusters,
    orthogonal as orthogonal,
    separable as separable,
    two_points as two_points,
)
