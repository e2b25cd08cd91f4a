"""The old name of three modules, kept as imports only for callers not yet moved to them.

engine.lift held resampling, corrections and lifts together; each now lives in the module named for it:
engine.resampling (resizes and the grid's upsample), engine.corrections (what a correction is and how it
is applied, NumPy beside torch), engine.recolour (the camera-rate apply) and engine.lifts (fitting an image head's output). vcam.segment
(resize_box) and tests/test_colour_prior.py still import this name; new code imports the modules.
Nothing is defined here.
"""

from __future__ import annotations

from engine.corrections import (  # noqa: F401
    GREY,
    METHODS,
    REFERENCE_GAIN_LIMITS,
    LiftParams,
    affine_corrected,
    apply_affine_grid,
    apply_delta,
    apply_delta_blend,
    apply_lift,
    apply_poly,
    blend_params,
    delta_corrected,
    poly_features,
    reference_light_gain,
    scale_grid_outputs,
)
from engine.lifts import fit_affine_grid, fit_delta, fit_lift, fit_poly, grid_shape  # noqa: F401
from engine.recolour import affine_corrected_fast, apply_affine_blend, apply_person, contrast_gain  # noqa: F401
from engine.resampling import aligned_crop_resize, resize_box  # noqa: F401
