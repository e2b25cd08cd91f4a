"""The segmenter's zoom: a person who fills a small part of the frame is segmented in a crop around them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import photos_with_published_masks

from vcam.segment import Segmenter
from vcam.zoom import ZOOM_RECHECK_FRAMES, tight_box, zoom_holds, zoom_region


def test_tight_box_scales_the_low_resolution_person_to_the_frame():
    low = np.zeros((36, 64), np.float32)
    low[10:20, 30:40] = 0.9
    low[5, 5] = 0.4  # below 0.5: not the person
    assert tight_box(low, (720, 1280)) == (200, 400, 600, 800)
    assert tight_box(np.zeros((36, 64), np.float32), (720, 1280)) is None


def test_zoom_region_grows_the_box_stays_in_the_frame_and_declines_large_crops():
    assert zoom_region((100, 300, 200, 300), (720, 1280), margin=0.1) == (80, 320, 190, 310)
    assert zoom_region((0, 300, 0, 100), (720, 1280), margin=0.1) == (0, 330, 0, 110)
    # a head-and-shoulders webcam frame: the crop would be most of the frame, the model would gain nothing
    assert zoom_region((0, 720, 250, 1050), (720, 1280), margin=0.1, max_area=0.6) is None


def test_zoom_holds_while_the_person_stays_well_inside_the_crop():
    region, size = (100, 500, 200, 600), (720, 1280)
    assert zoom_holds((150, 450, 250, 550), region, size)
    assert not zoom_holds(None, region, size)  # nobody in the crop
    assert not zoom_holds((150, 450, 201, 550), region, size)  # at the crop's left side: they may go on
    assert not zoom_holds((250, 350, 350, 450), region, size)  # a sixteenth of the crop: they moved away
    # a side of the crop that is the frame's own side does not count
    assert zoom_holds((0, 450, 250, 550), (0, 500, 200, 600), size)


def _small_person(photo: np.ndarray, mask: np.ndarray, size: tuple[int, int], x0: int):
    """The photo at 85 % of the frame's height, pasted at column x0 of a plain grey frame, and its mask."""
    height = int(size[0] * 0.85)
    width = int(photo.shape[1] * height / photo.shape[0])
    frame = np.full((*size, 3), 128, np.uint8)
    published = np.zeros(size, np.uint8)
    y0 = size[0] - height
    frame[y0:, x0:x0 + width] = cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)
    published[y0:, x0:x0 + width] = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    return frame, published


@pytest.fixture(scope="module")
def photos_with_masks(shared_data):
    return photos_with_published_masks(shared_data, 6)


def _edge_error(mask: np.ndarray, published: np.ndarray, band_px: int = 6) -> float:
    person = (published > 127).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band_px + 1,) * 2)
    band = (cv2.dilate(person, kernel) > 0) & (cv2.erode(person, kernel) == 0)
    return float(np.abs(mask - person)[band].mean())


def test_a_person_far_from_the_camera_gets_a_closer_edge(photos_with_masks):
    zoomed, whole = Segmenter(1, smoothing=False), Segmenter(1, smoothing=False, zoom=False)
    errors, crops = {"zoom": [], "whole": []}, 0
    for photo, mask in photos_with_masks:
        frame, published = _small_person(photo, mask, (720, 1280), 50)
        zoomed.reset()  # every photo is a new scene
        errors["zoom"].append(_edge_error(zoomed.mask_for(frame), published))
        crops += zoomed.region is not None  # (a wide group photo fills too much of the frame to gain)
        errors["whole"].append(_edge_error(whole.mask_for(frame), published))
        assert whole.region is None
    assert crops >= 8
    zoomed.close()
    whole.close()
    print({key: round(float(np.mean(value)), 4) for key, value in errors.items()})
    assert np.mean(errors["zoom"]) < 0.9 * np.mean(errors["whole"])


def test_the_crop_is_kept_while_the_person_stays_and_follows_them_when_they_move(photos_with_masks):
    photo, mask = photos_with_masks[0]
    left, _ = _small_person(photo, mask, (720, 1280), 50)
    right, published_right = _small_person(photo, mask, (720, 1280), 780)
    segmenter = Segmenter(1)  # temporal smoothing on, as in vcam run
    segmenter.mask_for(left)
    region = segmenter.region
    assert region is not None and region[3] < 640
    segmenter.mask_for(left)
    assert segmenter.region == region  # the same crop: one model run per frame
    moved = segmenter.mask_for(right)  # they walked to the right: a new crop, in the same frame
    assert segmenter.region is not None and segmenter.region[2] > 640
    person = published_right > 127
    assert moved[person].mean() > 0.9 and moved[:, :640].max() == 0  # this frame's mask, nothing of the last
    assert segmenter.mask_for(np.full((720, 1280, 3), 128, np.uint8)).max() == 0
    assert segmenter.box is None and segmenter.region is None
    segmenter.close()


def test_someone_who_comes_in_beside_the_crop_is_found_within_a_second(photos_with_masks):
    photo, mask = photos_with_masks[0]
    left, _ = _small_person(photo, mask, (720, 1280), 50)
    right, published_right = _small_person(photo, mask, (720, 1280), 780)
    both = np.where((published_right > 127)[..., None] | (np.arange(1280) >= 700)[None, :, None], right, left)
    segmenter = Segmenter(1)
    segmenter.mask_for(left)
    assert segmenter.region is not None
    for _ in range(ZOOM_RECHECK_FRAMES):  # a camera at 30 fps: within a second
        mask = segmenter.mask_for(both)
    whole = Segmenter(1, zoom=False)
    found = mask[published_right > 127].mean()
    assert found > 0.7 and found >= whole.mask_for(both)[published_right > 127].mean() - 0.05
    whole.close()
    segmenter.close()
