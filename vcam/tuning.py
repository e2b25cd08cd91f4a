"""Process-wide settings for the frame loop, made once at start: OpenCV's thread pool, malloc's thresholds."""

from __future__ import annotations

import ctypes

import cv2

from vcam.metrics import CORES


def limit_opencv_threads() -> None:
    """One OpenCV thread for the frame loop on small machines (4 cores or fewer).

    The loop's OpenCV passes are a few milliseconds each and work in the person's box; spreading them
    over a pool saves little wall time there, costs CPU time in hand-offs, and takes the core that the
    harmonizer's worker and the video call need. Larger machines keep OpenCV's default pool.
    """
    if CORES <= 4:
        cv2.setNumThreads(1)


FRAME_HEAP_BYTES = 32 << 20  # buffers up to this size come from the heap, which keeps this much when freed


def keep_freed_frames() -> bool:
    """Let glibc's malloc keep freed frame-sized buffers for the next frame (Linux; a no-op elsewhere).

    Every frame allocates a few planes of 1-4 MB (the mask, the composite, OpenCV's intermediates) and
    frees the last frame's. glibc serves such sizes with a fresh mmap, or trims them off the heap once freed,
    so each frame touched new pages: measured at 720p, about 3.5 ms of the composite's and 4 ms of the
    segmenter's CPU per frame went to page faults. With the mmap threshold raised to FRAME_HEAP_BYTES and
    the trim threshold to twice that (glibc's own ratio), freed buffers are reused; the process keeps up to
    that much spare memory. Returns whether the setting took.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, Windows): their allocators keep their own caches
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    return bool(mallopt(m_mmap_threshold, FRAME_HEAP_BYTES)) and bool(mallopt(m_trim_threshold,
                                                                                2 * FRAME_HEAP_BYTES))
