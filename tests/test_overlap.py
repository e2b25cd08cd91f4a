"""The front stage of the overlapped frame loop (vcam.overlap): order, one frame ahead at most, errors, and
closing after the last use. Real threads, no clocks: the tests wait on events and check what happened."""

from __future__ import annotations

import threading
import time

import pytest

from vcam.overlap import END, FrontStage


class Counter:
    """read(): 0, 1, 2, ... then END after `last`; records how many reads happened."""

    def __init__(self, last: int = 10**9):
        self.reads, self.last = 0, last

    def __call__(self):
        if self.reads > self.last:
            return END
        self.reads += 1
        return self.reads - 1


def test_items_come_in_order_and_the_front_reads_at_most_one_ahead():
    read = Counter(last=30)
    front = FrontStage(read, lambda item: item * 10, threading.RLock()).start()
    taken = []
    try:
        while (item := front.take(timeout=1.0)) is not END:
            if item is None:
                continue
            taken.append(item)
            time.sleep(0.002)  # the loop's work on this item: room for the front to run ahead if it could
            # The loop holds item n; the front may have read n+1 (in its work or the slot), never n+2.
            assert read.reads <= item // 10 + 2, (item, read.reads)
    finally:
        assert front.close(lambda: None)
    assert taken == [10 * i for i in range(31)]


def test_an_error_in_the_front_reaches_the_loop():
    def read():
        raise OSError("driver gone")

    front = FrontStage(read, lambda item: item, threading.RLock()).start()
    with pytest.raises(OSError, match="driver gone"):
        while front.take(timeout=1.0) is None:
            pass
    assert front.close(lambda: None)


def test_the_loop_changes_what_the_front_uses_only_between_its_frames():
    lock, inside = threading.RLock(), threading.Event()
    state = {"busy": False, "seen_busy": False}

    def work(item):
        state["busy"] = True
        inside.set()
        time.sleep(0.001)
        state["busy"] = False
        return item

    front = FrontStage(Counter(), work, lock).start()
    try:
        for _ in range(50):
            assert front.take(timeout=5.0) is not None
            inside.wait(5.0)
            with lock:  # a live setting: the front is between two frames here
                state["seen_busy"] |= state["busy"]
    finally:
        assert front.close(lambda: None)
    assert not state["seen_busy"]


def test_a_front_stuck_in_a_frame_closes_what_it_uses_itself_after_it():
    release, entered, closed = threading.Event(), threading.Event(), []

    def work(item):
        entered.set()
        release.wait(30.0)
        return item

    front = FrontStage(Counter(), work, threading.RLock(), join_s=0.01).start()
    assert entered.wait(30.0)
    assert front.close(lambda: closed.append(threading.current_thread().name)) is False
    assert closed == [], "never closed under the frame it is in"
    release.set()
    deadline = time.monotonic() + 30.0
    while not closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert closed == ["vcam-front"], "closed once, by the front thread, after its last use"
    assert front.close(lambda: closed.append("again")) is False and closed == ["vcam-front"], "closed once"


def test_close_before_start_and_twice():
    front = FrontStage(Counter(), lambda item: item, threading.RLock())
    assert front.close(lambda: None) and front.close(lambda: None)


def test_auto_overlaps_only_where_one_thread_falls_short():
    from vcam.metrics import CORES
    from vcam.pipeline import use_overlap

    hd, small = (1920, 1080), (1280, 720)
    assert use_overlap("on", small, False) and not use_overlap("off", hd, True)
    assert use_overlap("auto", hd, True) is (CORES >= 2)
    assert not use_overlap("auto", small, True), "720p: one thread keeps the rate"
    assert not use_overlap("auto", hd, False), "nothing to overlap the front with"
