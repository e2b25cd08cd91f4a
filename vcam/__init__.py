"""vcam: a real-time portrait harmonization virtual camera.

capture -> segment -> composite -> harmonize -> output, one `vcam.frame.Frame` through every stage.
"""

import os

# OpenCV prints its own WARN/ERROR lines when it probes cameras ("can't open camera by index"); vcam turns
# those failures into one clear line of its own. Read once, when cv2 is first imported, so it is set here,
# before any vcam module imports cv2. A user who wants OpenCV's log sets OPENCV_LOG_LEVEL themselves.
os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")

__version__ = "0.1.0"
