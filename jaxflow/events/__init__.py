from ._events import (
    AbstractEvent as AbstractEvent,
    Event as Event,
    LossBelow as LossBelow,
    SteadyState as SteadyState,
)
