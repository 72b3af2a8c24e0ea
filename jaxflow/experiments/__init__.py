"""Studies of the papers jaxflow was built for (see each function's reference)."""

from ._alignment import (
    AlignmentTheory as AlignmentTheory,
    alignment_events as alignment_events,
    alignment_metrics as alignment_metrics,
    alignment_summary as alignment_summary,
    alignment_theory as alignment_theory,
)
from ._plots import plot_alignment as plot_alignment, plot_times as plot_times
from ._spurious import (
    classify_ensemble as classify_ensemble,
    least_squares as least_squares,
    plot_spurious as plot_spurious,
    spurious_summary as spurious_summary,
)
