"""Studies of the papers jaxflow was built for (see each function's reference)."""

from ._alignment import (
    AlignmentTheory as AlignmentTheory,
    alignment_events as alignment_events,
    alignment_metrics as alignment_metrics,
    alignment_summary as alignment_summary,
    alignment_theory as alignment_theory,
)
from ._neuron import (
    convergence_times as convergence_times,
    finite_sample_gap as finite_sample_gap,
    gd_gap as gd_gap,
    magnitude_angle as magnitude_angle,
    magnitude_angle_field as magnitude_angle_field,
    neuron_report as neuron_report,
    neuron_study as neuron_study,
    neuron_summary as neuron_summary,
    plot_neuron as plot_neuron,
    teacher_flow as teacher_flow,
)
from ._plots import (
    plot_alignment as plot_alignment,
    plot_demo as plot_demo,
    plot_times as plot_times,
)
from ._spurious import (
    classify_ensemble as classify_ensemble,
    least_squares as least_squares,
    plot_spurious as plot_spurious,
    spurious_summary as spurious_summary,
)


__all__ = [
    "AlignmentTheory",
    "alignment_events",
    "alignment_metrics",
    "alignment_summary",
    "alignment_theory",
    "convergence_times",
    "finite_sample_gap",
    "gd_gap",
    "magnitude_angle",
    "magnitude_angle_field",
    "neuron_report",
    "neuron_study",
    "neuron_summary",
    "plot_neuron",
    "teacher_flow",
    "plot_alignment",
    "plot_demo",
    "plot_times",
    "classify_ensemble",
    "least_squares",
    "plot_spurious",
    "spurious_summary",
]
