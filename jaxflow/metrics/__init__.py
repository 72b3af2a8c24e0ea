"""Metrics `metric(model, flow) -> array`, recorded at the saved times of a solve."""

from ._metrics import (
    ConservedDrift as ConservedDrift,
    TeacherAngle as TeacherAngle,
    align_minus as align_minus,
    align_plus as align_plus,
    cos_minus as cos_minus,
    cos_own as cos_own,
    cos_plus as cos_plus,
    default_metrics as default_metrics,
    direction_change as direction_change,
    frac_dead as frac_dead,
    frac_minus as frac_minus,
    frac_plus as frac_plus,
    grad_norm as grad_norm,
    loss as loss,
    magnitude as magnitude,
    neuron_norms as neuron_norms,
    norm_change as norm_change,
    spectral_norm_sq as spectral_norm_sq,
    stable_rank as stable_rank,
    teacher_angle as teacher_angle,
)
