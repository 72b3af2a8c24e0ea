from ._alignment import (
    Aligned as Aligned,
    AllInCones as AllInCones,
    InCone as InCone,
    LossFraction as LossFraction,
    NormGrowth as NormGrowth,
    in_cones as in_cones,
    in_own_cones as in_own_cones,
)
from ._events import (
    AbstractEvent as AbstractEvent,
    Event as Event,
    LossBelow as LossBelow,
    SteadyState as SteadyState,
)


__all__ = [
    "Aligned",
    "AllInCones",
    "InCone",
    "LossFraction",
    "NormGrowth",
    "in_cones",
    "in_own_cones",
    "AbstractEvent",
    "Event",
    "LossBelow",
    "SteadyState",
]
