"""vcam: a real-time portrait harmonization virtual camera.

capture -> segment -> composite -> harmonize -> output, one `vcam.frame.Frame` through every stage.
"""

__version__ = "0.1.0"
