"""The mask under motion: a crop that follows the person and never cuts them, someone coming in found in the
same frame, a steadier edge on a still person; real MediaPipe on real photos with published masks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import photos_with_published_masks

from vcam.segment import Segmenter, adaptive_ema
from vcam.zoom import cut_sides, follow_box, person_parts, tight_box

SIZE = (720, 1280)


def test_cut_sides_names_the_crop_sides_the_person_touches_inside_the_frame():
    region = (0, 400, 100, 500)
    assert cut_sides((50, 300, 200, 400), region, SIZE) == (False, False, False, False)
    # at the crop's bottom (not the frame's): cut; at its top, which is the frame's top: not
    assert cut_sides((0, 399, 200, 400), region, SIZE) == (False, True, False, False)
    assert cut_sides((50, 300, 101, 499), region, SIZE) == (False, False, True, True)


def test_follow_box_leads_the_motion_and_grows_past_a_cut():
    tight, previous = (100, 300, 400, 500), (100, 300, 380, 480)  # 20 px to the right since the last frame
    assert follow_box(tight, None) == tight
    assert follow_box(tight, previous) == (100, 300, 400, 520)
    assert follow_box(tight, None, (False, True, False, False), grow=0.5) == (100, 400, 400, 500)
    assert follow_box(tight, None, (True, False, False, False), grow=1.0) == (-100, 300, 400, 500)


def test_person_parts_drops_specks_but_not_someone_at_the_side():
    low = np.zeros((144, 256), np.float32)
    low[40:140, 100:140] = 0.9  # the person
    low[20:23, 200:203] = 0.8  # a speck of background
    low[60:80, 0:3] = 0.9  # a hand coming in at the left side: as small, but at the side
    low[50:53, 146:149] = 0.9  # a hand apart from the body, beside it
    parts = person_parts(low)
    assert parts[50, 120] == 1 and parts[21, 201] == 0 and parts[70, 1] == 1 and parts[51, 147] == 1
    assert tight_box(low, (144, 256), specks=False) == (40, 140, 0, 149)
    assert tight_box(low, (144, 256)) == (20, 140, 0, 203)


def _person_on(background: np.ndarray, photo: np.ndarray, mask: np.ndarray, x0: int, height: float = 0.85):
    """The photo's person (its published mask) at column x0, standing on the frame's bottom; and the truth."""
    h = int(SIZE[0] * height)
    w = int(photo.shape[1] * h / photo.shape[0])
    person = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)
    cut = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST) > 127
    frame, truth = background.copy(), np.zeros(SIZE, bool)
    a, b = max(x0, 0), min(x0 + w, SIZE[1])
    frame[SIZE[0] - h:, a:b][cut[:, a - x0:b - x0]] = person[:, a - x0:b - x0][cut[:, a - x0:b - x0]]
    truth[SIZE[0] - h:, a:b] = cut[:, a - x0:b - x0]
    return frame, truth


def _iou(mask: np.ndarray, truth: np.ndarray) -> float:
    pred = mask >= 0.5
    return float((pred & truth).sum() / (pred | truth).sum())


@pytest.fixture(scope="module")
def full_body(shared_data):
    """A full-body photo (ccp) with its published mask, and a real background at 720p."""
    photo, mask = photos_with_published_masks(shared_data, 1)[0]
    backdrop = cv2.imread(str(shared_data / "backgrounds" / "lomiri1604_Bridge_by_Sander_Klootwijk.jpg"))
    if backdrop is None:
        pytest.skip("no backgrounds in the shared data")
    background = cv2.resize(cv2.cvtColor(backdrop, cv2.COLOR_BGR2RGB), SIZE[::-1], interpolation=cv2.INTER_AREA)
    return photo, mask, background


def test_a_person_walking_across_is_followed_by_the_crop_and_the_mask(full_body):
    photo, mask, background = full_body
    segmenter = Segmenter(1)  # smoothing and zoom on, as vcam runs
    still = segmenter.mask_for(_person_on(background, photo, mask, 300)[0])
    still_iou = _iou(still, _person_on(background, photo, mask, 300)[1])
    assert segmenter.region is not None  # a full-body person: segmented in a crop
    ious = []
    for x in range(300, 300 + 16 * 20, 16):  # 16 px per frame for 20 frames
        frame, truth = _person_on(background, photo, mask, x)
        moving = segmenter.mask_for(frame)
        ious.append(_iou(moving, truth))
        y0, y1, x0, x1 = segmenter.region
        rows, cols = np.nonzero(truth)
        assert x0 <= cols.min() and cols.max() < x1 and y0 <= rows.min()  # the crop holds the whole person
    segmenter.close()
    assert min(ious) > still_iou - 0.03, (still_iou, ious)


def test_a_crop_that_cuts_the_person_is_grown_in_the_same_frame(full_body):
    photo, mask, background = full_body
    frame, truth = _person_on(background, photo, mask, 500)
    segmenter = Segmenter(1, smoothing=False)
    reference = segmenter.mask_for(frame)
    rows, cols = np.nonzero(truth)
    middle = (rows.min() + rows.max()) // 2
    # a crop that ends at the person's waist, as a whole-frame pass that missed their legs would give
    segmenter.region = (max(rows.min() - 40, 0), middle, cols.min() - 40, cols.max() + 40)
    mask_out = segmenter.mask_for(frame)
    segmenter.close()
    legs = truth & (np.arange(SIZE[0]) > middle + 20)[:, None]
    assert (mask_out[legs] >= 0.5).mean() > 0.9
    assert _iou(mask_out, truth) > _iou(reference, truth) - 0.02


def test_someone_coming_in_beside_the_crop_is_found_in_the_same_frame(full_body, shared_data):
    photo, mask, background = full_body
    other, other_mask = photos_with_published_masks(shared_data, 3)[2]
    alone, _ = _person_on(background, photo, mask, 150)
    segmenter = Segmenter(1)
    for _ in range(3):
        segmenter.mask_for(alone)
    assert segmenter.region is not None and segmenter.region[3] < 700
    both, truth_second = _person_on(alone, other, other_mask, 900)
    found = segmenter.mask_for(both)  # the first frame they are in, long before the once-a-second look
    segmenter.close()
    whole = Segmenter(1, zoom=False)  # as far as the model sees them in the whole frame
    seen = whole.mask_for(both)
    whole.close()
    assert (seen[truth_second] >= 0.5).mean() > 0.8
    assert (found[truth_second] >= 0.5).mean() > (seen[truth_second] >= 0.5).mean() - 0.05


def test_a_still_person_s_edge_flickers_less_with_smoothing(full_body):
    photo, mask, background = full_body
    frame, truth = _person_on(background, photo, mask, 500)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (13, 13))
    band = (cv2.dilate(truth.astype(np.uint8), kernel) > 0) & (cv2.erode(truth.astype(np.uint8), kernel) == 0)
    flicker = {}
    for smoothing in (False, True):
        rng = np.random.default_rng(0)  # the same camera noise for both
        segmenter = Segmenter(1, smoothing=smoothing)
        masks = [segmenter.mask_for(np.clip(frame + rng.normal(0, 3, frame.shape), 0, 255).astype(np.uint8))
                 for _ in range(8)]
        segmenter.close()
        flicker[smoothing] = np.mean([np.abs(b - a)[band].mean() for a, b in zip(masks[2:], masks[3:])])
    assert flicker[True] < 0.5 * flicker[False], flicker


def test_adaptive_ema_damps_any_change_where_the_picture_is_still():
    previous = np.zeros((4, 4), np.float32)
    mask = np.ones((4, 4), np.float32)  # a jump of 1: taken in full where the picture moved
    still = np.zeros((4, 4), bool)
    still[:2] = True
    out = adaptive_ema(previous, mask, still=still, alpha_still=0.25)
    assert np.allclose(out[:2], 0.25) and np.allclose(out[2:], 1.0)
    assert np.array_equal(adaptive_ema(previous, mask), np.ones((4, 4), np.float32))
    # the whole picture still: one weight everywhere, as a plane of True would give
    everywhere = adaptive_ema(previous, mask, still=True, alpha_still=0.25)
    assert np.allclose(everywhere, adaptive_ema(previous, mask, still=np.ones((4, 4), bool), alpha_still=0.25))
