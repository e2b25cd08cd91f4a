"""engine.gpu_frame: the device frame path gives the CPU path's picture (vcam.composite + engine.Harmonizer
with the app's apply: the person's own colours corrected and composited again, `foreground=, background=`).

Run on the CPU torch device here (fp32), on real photos with MediaPipe masks. Tolerance, fp32: at most
2 levels of 255 anywhere and under 1 % of the values different: the two paths round at the same places,
and what is left is float summation order and where a rounding tie falls.
"""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest
import torch

from engine.colour_prior import PRIOR_PATH
from engine.gpu_frame import GpuFramePath
from engine.harmonizer import Harmonizer
from engine.phnet import create_model
from engine.resampling import resize_matrices
from engine.weights import DEFAULT_WEIGHTS, load_weights
from vcam.composite import composite

pytestmark = pytest.mark.usefixtures("torch_one_thread")

MAX_LEVELS = 2
MAX_DIFFERENT = 0.01


def _affine_model(head_std: float, prior: str, keep_detail: float = 0.0):
    """phnet-xs with the affine head, its zero-initialised head layers drawn at random (seeded): the
    correction then visibly changes the person, so agreement is not the identity agreeing with itself.
    `prior`: "no prior", or "shipped prior" (engine.colour_prior, as the shipped weights run)."""
    torch.manual_seed(0)
    m = create_model("phnet-xs", output="affine", keep_detail=keep_detail).eval()
    with torch.no_grad():
        for p in list(m.head.parameters()) + list(m.global_transform.fc2.parameters()):
            p.normal_(std=head_std)
    if prior == "shipped prior":
        m.config.colour_prior = str(PRIOR_PATH)
    return m


@pytest.fixture(scope="module", params=["no prior", "shipped prior"])
def model(request):
    return _affine_model(0.05, request.param)


@pytest.fixture(scope="module", params=["no prior", "shipped prior", "keep_detail 3", "shipped weights"])
def strong_model(request):
    """A head drawn 6x stronger: corrections that swing with the person's light from frame to frame, so
    that a temporal step done differently in one path (the momentum, the average, a reset) shows as more
    than a level (measured: HEAD's vcam.gpu_frame, whose momentum ignored a frame without a person, was 3
    levels off after one; an average weighted 0.8x in one path, 9-22 levels). "keep_detail 3" keeps the
    texture finer than 3 network pixels, as the shipped weights do; "shipped weights" are those weights
    themselves (engine/weights/default.safetensors, their colour prior, keep_detail 3)."""
    if request.param == "shipped weights":
        return load_weights(DEFAULT_WEIGHTS)
    if request.param == "keep_detail 3":
        return _affine_model(0.3, "shipped prior", keep_detail=3.0)
    return _affine_model(0.3, request.param)


@pytest.fixture(scope="module")
def photo():
    """A real portrait (skimage's astronaut, public domain) at 640x360, its MediaPipe mask, and two real
    backgrounds (skimage's rocket and coffee) at that size."""
    from skimage import data

    from vcam.segment import Segmenter

    size = (640, 360)
    person = cv2.resize(data.astronaut()[56:456], size, interpolation=cv2.INTER_AREA)
    backgrounds = [cv2.resize(b, size, interpolation=cv2.INTER_AREA) for b in (data.rocket(), data.coffee())]
    segmenter = Segmenter(1, smoothing=False)
    try:
        mask = segmenter.mask_for(person)
    finally:
        segmenter.close()
    assert mask.max() > 0.9 and mask.min() == 0.0  # a real person and a real background
    return person, mask, backgrounds


def _app_apply(harmonizer: Harmonizer, image, background, mask, reference=None, timestamp=None) -> np.ndarray:
    """What the app sends: the composite, estimated on, and the correction applied to the person's own
    colours, composited over the background again (vcam.harmonize's apply)."""
    comp = composite(image, background, mask)
    correction = harmonizer.estimate(comp, mask, reference, timestamp=timestamp)
    return harmonizer.apply(correction, comp, mask, foreground=image, background=background)


def _agree(out: np.ndarray, ref: np.ndarray) -> None:
    diff = np.abs(out.astype(np.int16) - ref.astype(np.int16))
    assert out.dtype == np.uint8 and out.shape == ref.shape
    assert diff.max() <= MAX_LEVELS, f"max difference {diff.max()} levels"
    assert (diff > 0).mean() < MAX_DIFFERENT, f"{(diff > 0).mean():.2%} of values differ"


@pytest.mark.parametrize("size, net", [((1080, 1920), (144, 256)), ((360, 640), (144, 256)),
                                       ((12, 20), (16, 24))])
def test_resize_matrices_are_cv2_resize(size, net):
    rng = np.random.default_rng(0)
    image = rng.random(size, dtype=np.float32)
    ry, rx_t = resize_matrices(size, net)
    interp = cv2.INTER_AREA if net[0] <= size[0] and net[1] <= size[1] else cv2.INTER_LINEAR
    expected = cv2.resize(image, net[::-1], interpolation=interp)
    np.testing.assert_allclose(ry @ image @ rx_t, expected, atol=1e-5)


def test_a_sequence_matches_the_cpu_path(model, photo):
    """Camera motion, a background change (a scene change both must detect), smoothing 0.8."""
    person, mask, backgrounds = photo
    harmonizer = Harmonizer(model=model, backend="torch", device="cpu", sharpness=False, smoothing=0.8)
    path = GpuFramePath(model, (640, 360), background=backgrounds[0], device="cpu", smoothing=0.8)
    changed = []
    for i, (shift, bg) in enumerate([(0, 0), (4, 0), (8, 0), (8, 1), (12, 1)]):
        image, m = np.roll(person, shift, axis=1), np.roll(mask, shift, axis=1)
        comp = composite(image, backgrounds[bg], m)
        correction = harmonizer.estimate(comp, m, timestamp=i / 30)  # the path's frames are 1/30 s apart
        ref = harmonizer.apply(correction, comp, m, foreground=image, background=backgrounds[bg])
        changed.append(correction.scene_change)
        out = path.process(image, m, background=backgrounds[bg] if i == 3 else None)
        _agree(out, ref)
        assert np.abs(ref.astype(int) - comp).mean() > 1.0  # the correction does change the person
    assert changed == [False, False, False, True, False]
    harmonizer.close()


def test_background_is_exact_and_harmonize_off_is_the_composite(model, photo):
    person, mask, backgrounds = photo
    path = GpuFramePath(model, (640, 360), background=backgrounds[0], device="cpu")
    comp = composite(person, backgrounds[0], mask)
    out = path.process(person, mask)
    assert np.array_equal(out[mask == 0], backgrounds[0][mask == 0])
    path.harmonizing = False
    assert np.array_equal(path.process(person, mask), comp)


def test_no_person_returns_the_composite_and_keeps_the_state(model, photo):
    person, mask, backgrounds = photo
    harmonizer = Harmonizer(model=model, backend="torch", device="cpu", sharpness=False, smoothing=0.8)
    path = GpuFramePath(model, (640, 360), background=backgrounds[0], device="cpu", smoothing=0.8)
    empty = np.zeros_like(mask)
    for i, m in enumerate((mask, empty, mask)):
        comp = composite(person, backgrounds[0], m)
        out = path.process(person, m)
        _agree(out, _app_apply(harmonizer, person, backgrounds[0], m, timestamp=i / 30))
        if m is empty:
            assert np.array_equal(out, comp)


def test_strength_uint8_mask_and_bgr_order(model, photo):
    person, mask, backgrounds = photo
    mask_u8 = np.round(mask * 255).astype(np.uint8)
    harmonizer = Harmonizer(model=model, backend="torch", device="cpu", sharpness=False, strength=0.5)
    ref = _app_apply(harmonizer, person, backgrounds[0], mask_u8.astype(np.float32) / 255)
    path = GpuFramePath(model, (640, 360), background=backgrounds[0][..., ::-1].copy(), device="cpu",
                        strength=0.5, channels="bgr")
    out = path.process(person[..., ::-1].copy(), mask_u8)
    _agree(out[..., ::-1], ref)


def test_frames_in_flight_keep_their_own_outputs(model, photo):
    """submit() twice before result(): each pending frame returns its own output (one slot each)."""
    person, mask, backgrounds = photo
    path = GpuFramePath(model, (640, 360), background=backgrounds[0], device="cpu", depth=2)
    shifted = np.roll(person, 40, axis=1), np.roll(mask, 40, axis=1)
    expected = [path.process(person, mask).copy(), path.process(*shifted).copy()]
    path.reset()
    first, second = path.submit(person, mask), path.submit(*shifted)
    assert np.array_equal(first.result(), expected[0]) and np.array_equal(second.result(), expected[1])
    assert not np.array_equal(expected[0], expected[1])


def test_reference_region_matches_the_cpu_path(model, photo):
    person, mask, backgrounds = photo
    reference = np.zeros_like(mask)
    reference[:, :160] = 1.0  # the left quarter of the background only
    harmonizer = Harmonizer(model=model, backend="torch", device="cpu", sharpness=False)
    path = GpuFramePath(model, (640, 360), background=backgrounds[1], device="cpu", reference=reference)
    _agree(path.process(person, mask), _app_apply(harmonizer, person, backgrounds[1], mask, reference))


@pytest.mark.parametrize("options", ["as the app", "keep_detail and sharpness"])
def test_the_device_step_has_no_host_round_trip(model, photo, options):
    """Every decision is a torch.where: dynamo traces the whole step as ONE graph (fullgraph raises on a
    `.item()`, a `bool(tensor)` or a Python `if` on a tensor, which would wait for the GPU and break the
    CUDA graph). backend="eager" only traces: no compiler is needed. Constants are made once, outside the
    step (a tensor copied from the host inside it could not be captured)."""
    person, mask, backgrounds = photo
    sharpness = options != "as the app"
    if sharpness:
        model = copy.deepcopy(model)
        model.config.keep_detail = 3.0
    path = GpuFramePath(model, (640, 360), background=backgrounds[0], device="cpu", smoothing=0.5,
                        sharpness=sharpness)
    path.process(person, mask)
    expected = path._out.clone()
    path.reset()
    step = torch.compile(path._step, backend="eager", fullgraph=True)
    with torch.inference_mode():
        step(True)
    assert torch.equal(path._out, expected)


def test_bad_input_raises_one_clear_error(model, photo):
    person, mask, _ = photo
    path = GpuFramePath(model, (640, 360), device="cpu")
    with pytest.raises(TypeError, match="uint8"):
        path.process(person.astype(np.float32), mask)
    with pytest.raises(ValueError, match=r"\(360, 640, 3\)"):
        path.process(person[:100], mask)
    with pytest.raises(ValueError, match="mask must be"):
        path.process(person, mask[:100])
    with pytest.raises(TypeError, match="mask must be"):
        path.process(person, mask.astype(np.int32))
    with pytest.raises(ValueError, match="affine-head"):
        GpuFramePath(create_model("phnet-xs"), (640, 360), device="cpu")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        GpuFramePath(model, (640, 360), device="cpu", precision="fp16")
    with pytest.raises(ValueError, match="smoothing"):
        GpuFramePath(model, (640, 360), device="cpu", smoothing=5.0)
    with pytest.raises(ValueError, match="channels"):
        GpuFramePath(model, (640, 360), device="cpu", channels="yuv")


def test_a_real_720p_video_matches_the_cpu_path(model, shared_data):
    from vcam.segment import Segmenter

    cap = cv2.VideoCapture(str(shared_data / "videos" / "liveportrait_s18.mp4"))
    frames = [cv2.cvtColor(cap.read()[1], cv2.COLOR_BGR2RGB) for _ in range(3)]
    cap.release()
    h, w = frames[0].shape[:2]
    background = cv2.resize(cv2.imread(str(shared_data / "backgrounds" / "mate_Dune.jpg"))[..., ::-1],
                            (w, h), interpolation=cv2.INTER_AREA)
    segmenter = Segmenter(1)
    harmonizer = Harmonizer(model=model, backend="torch", device="cpu", sharpness=False, smoothing=0.8)
    path = GpuFramePath(model, (w, h), background=background, device="cpu", smoothing=0.8)
    try:
        for i, frame in enumerate(frames):
            m = segmenter.mask_for(frame)
            _agree(path.process(frame, m), _app_apply(harmonizer, frame, background, m, timestamp=i / 30))
    finally:
        segmenter.close()


@pytest.mark.gpu
def test_cuda_half_precision_graph_matches_the_cpu_path(model):
    """fp16 on the GPU: a looser bound (fp16 products at 0..255 carry ~0.1 level of error, and the network
    runs in half); the CUDA graph equals the eager device step bit for bit. An elliptical mask instead of
    MediaPipe's: the GPU machine has no MediaPipe."""
    from skimage import data

    size = (640, 360)
    person = cv2.resize(data.astronaut()[56:456], size, interpolation=cv2.INTER_AREA)
    backgrounds = [cv2.resize(data.rocket(), size, interpolation=cv2.INTER_AREA)]
    yy, xx = np.mgrid[0:360, 0:640]
    mask = cv2.GaussianBlur((((yy - 250) / 180.0) ** 2 + ((xx - 320) / 150.0) ** 2 <= 1).astype(np.float32),
                            (0, 0), 3)
    ref = _app_apply(Harmonizer(model=model, backend="torch", device="cpu", sharpness=False), person, backgrounds[0], mask)
    graph = GpuFramePath(model, (640, 360), background=backgrounds[0], device="cuda")
    eager = GpuFramePath(model, (640, 360), background=backgrounds[0], device="cuda", cuda_graph=False)
    out = graph.submit(person, mask).result().copy()
    assert np.array_equal(out, eager.process(person, mask))
    diff = np.abs(out.astype(int) - ref)
    assert diff.max() <= 12 and diff.mean() < 0.5
    # Two frames in flight on the GPU's stream, each read back from its own pinned slot.
    mirrored = np.ascontiguousarray(person[:, ::-1]), np.ascontiguousarray(mask[:, ::-1])
    first, second = graph.submit(person, mask, timing=True), graph.submit(*mirrored)
    assert np.array_equal(first.result(), out)
    assert np.array_equal(second.result(), eager.process(*mirrored))
    assert first.timings["gpu_ms"] > 0


def _moving_person(frames: int, size=(320, 180), step=8):
    """A synthetic clip: a textured, colour-cast person (an ellipse with a soft edge, a head above it)
    walking left to right over a still background of wide light and dark bands, the light on them changing
    from frame to frame (so the smoothing shows); on frame 4 the segmenter misses them (an empty mask), as
    MediaPipe sometimes does for a frame. Returns [(image, mask)] and the background."""
    w, h = size
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    bands = np.where((xx // 40) % 2 == 0, 40.0, 220.0)[..., None] * np.array([0.6, 0.9, 1.0])
    background = np.clip(bands + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
    skin = np.array([205, 150, 120], np.float32) * np.array([1.15, 0.9, 0.75])  # a warm cast to correct
    texture = rng.normal(0, 10, (h, w + step * frames, 3)).astype(np.float32)
    clip = []
    for i in range(frames):
        cx = 80 + step * i
        body = ((xx - cx) / 45) ** 2 + ((yy - 150) / 70) ** 2 <= 1
        head = ((xx - cx) / 22) ** 2 + ((yy - 60) / 27) ** 2 <= 1
        mask = cv2.GaussianBlur((body | head).astype(np.float32), (0, 0), 2.5)
        light = 1.0 + 0.25 * np.sin(1.3 * i)  # the person's light changes as they walk
        person = skin * light * (0.8 + 0.2 * np.cos((xx - cx) / 30))[..., None] + texture[:, step * i:step * i + w]
        image = np.where(mask[..., None] > 0, np.clip(person, 0, 255), background).astype(np.uint8)
        clip.append((image, mask if i != 4 else np.zeros_like(mask)))
    return clip, background


def test_a_moving_person_matches_the_cpu_path_within_one_level(strong_model):
    """Acceptance 3 of issue 22: the GPU frame path (on the CPU torch device, fp32) equals engine.Harmonizer
    with the app's apply (the person's own colours corrected, composited again) within 1 level of 255 on
    every pixel of every frame, while a person moves over a still background with smoothing on (the
    temporal state carried from frame to frame), and under 0.5 % of the values a level apart; with the
    shipped weights too (keep_detail: the person re-coloured through the frame's 1/4 image).

    Measured with one step changed in the GPU path only, each fails: the resize not rounded to uint8 (1.1 %
    of values differ), the composite's blend without cv2's 1e-5 (2 levels), a scene test that fires on the
    walk (104 levels), the average weighted 0.8x (9-29 levels), measured on the blend apply before the
    app's; on the app's apply, the person re-coloured at twice the block size (4 levels), the kept
    texture's gain neither gated nor smoothed (11 levels); so did HEAD's vcam.gpu_frame before issue 22 (3
    levels: its momentum ignored the missed frame). The edge's 1e-5 in person_over_torch falls on ties this
    clip does not have: tests/test_resampling.py's composite test catches it."""
    clip, background = _moving_person(8)
    harmonizer = Harmonizer(model=strong_model, backend="torch", device="cpu", sharpness=False, smoothing=0.5)
    path = GpuFramePath(strong_model, (320, 180), background=background, device="cpu", smoothing=0.5)
    worst, different, moved, changed = 0, [], [], []
    for i, (image, mask) in enumerate(clip):
        comp = composite(image, background, mask)
        correction = harmonizer.estimate(comp, mask, timestamp=i / 30)
        ref = harmonizer.apply(correction, comp, mask, foreground=image, background=background)
        out = path.process(image, mask)
        diff = np.abs(out.astype(np.int16) - ref)
        worst, different = max(worst, int(diff.max())), different + [float((diff > 0).mean())]
        moved.append(correction.momentum > 0 and not correction.scene_change)
        changed.append(np.abs(ref.astype(int) - comp)[mask > 0.5].mean() if i != 4 else None)
    assert min(c for c in changed if c is not None) > 2.0  # the correction does change the person
    assert worst <= 1, f"max difference {worst} levels"
    # Measured: at most 1 level; 0-0.007 % of the values a level apart (float rounding ties) with the random
    # heads, which move the person by 48-64 levels on average; 0.05-0.11 % with the shipped weights, which
    # move this colour-cast person by 2.6-10.4 levels.
    assert np.mean(different) < 0.005, f"{np.mean(different):.2%} of values differ"
    # The walk is one scene: the state is carried throughout (frame 4 has no person: no estimate).
    assert moved == [False, True, True, True, False, True, True, True]
    harmonizer.close()


def test_the_app_stage_runs_the_gpu_frame_path_as_its_inline_estimate_and_apply(strong_model):
    """vcam.harmonize's inline stage with the GPU frame path (on CUDA by default; here forced on the CPU
    torch device) sends what the same stage sends with estimate + apply, within a level, through the
    walk, a strength change and a reset from the control page."""
    from vcam.frame import Frame
    from vcam.harmonize import HarmonizeStage

    clip, background = _moving_person(6)
    stages = [HarmonizeStage(Harmonizer(model=strong_model, backend="torch", device="cpu", sharpness=False,
                                        smoothing=0.5), mode="inline", gpu_frames=gpu) for gpu in (True, False)]
    assert [s.gpu_frames for s in stages] == [True, False]
    for i, (image, mask) in enumerate(clip):
        if i == 2:
            for stage in stages:
                stage.configure(strength=0.6)
        if i == 4:
            for stage in stages:
                stage.reset()
        outputs = []
        for stage in stages:
            frame = Frame(i, i / 30, image, mask=mask, foreground=image, background=background,
                          composite=composite(image, background, mask))
            outputs.append(stage(frame).output)
        assert not any(s.failed for s in stages)
        diff = np.abs(outputs[0].astype(np.int16) - outputs[1])
        assert diff.max() <= 1 and (diff > 0).mean() < 0.005, (i, diff.max(), (diff > 0).mean())
    assert stages[0]._frames is not None and stages[0]._frames.strength == 0.6
    for stage in stages:
        stage.close()
    assert stages[0]._frames is None


class _BrokenPathHarmonizer(Harmonizer):
    """A harmonizer whose GPU frame path fails on its first frame, as a CUDA graph capture might on a card
    nobody tested."""

    def frame_path(self, size, reference=None):
        return _FailingPath(size)


class _FailingPath:
    def __init__(self, size):
        self.size, self.strength, self.smoothing, self.closed = size, 1.0, 0.0, False

    def process(self, foreground, mask, background):
        raise RuntimeError("CUDA graph capture failed")

    def reset(self):
        pass

    def close(self):
        self.closed = True


def test_a_failing_gpu_frame_path_falls_back_to_estimate_and_apply(model, caplog):
    """The GPU frame path has never run on a real GPU: where it fails, the stage logs one line and sends
    what estimate + apply sends, on that frame and every later one, never an error or the raw camera."""
    from vcam.frame import Frame
    from vcam.harmonize import HarmonizeStage

    clip, background = _moving_person(3)
    broken = HarmonizeStage(_BrokenPathHarmonizer(model=model, backend="torch", device="cpu", sharpness=False),
                            mode="inline", gpu_frames=True)
    plain = HarmonizeStage(Harmonizer(model=model, backend="torch", device="cpu", sharpness=False),
                           mode="inline", gpu_frames=False)
    for i, (image, mask) in enumerate(clip):
        frames = [Frame(i, i / 30, image, mask=mask, foreground=image, background=background,
                        composite=composite(image, background, mask)) for _ in range(2)]
        outputs = [stage(f).output for stage, f in zip((broken, plain), frames)]
        assert not broken.failed
        np.testing.assert_array_equal(outputs[0], outputs[1])
    assert broken.gpu_frames is False and broken._frames is None
    assert sum("GPU frame path failed (RuntimeError: CUDA graph capture failed)" in r.message
               for r in caplog.records) == 1
    for stage in (broken, plain):
        stage.close()


def test_the_sharpness_undo_matches_the_cpu_path(model):
    """With sharpness on (Harmonizer's default; off in the app) both paths detect the walking person's
    sharpening on the whole frame and undo the same share of it before the transforms: within a level."""
    from engine.sharpness import sharpen

    clip, background = _moving_person(3)
    harmonizer = Harmonizer(model=model, backend="torch", device="cpu", sharpness=True, smoothing=0.5)
    path = GpuFramePath(model, (320, 180), background=background, device="cpu", smoothing=0.5, sharpness=True)
    for i, (image, mask) in enumerate(clip):
        image = np.where(mask[..., None] > 0, np.clip(sharpen(image, 4.0), 0, 255), image).astype(np.uint8)
        comp = composite(image, background, mask)
        correction = harmonizer.estimate(comp, mask, timestamp=i / 30)
        assert correction.unsharpen > 0.5  # the detector acts on this person
        ref = harmonizer.apply(correction, comp, mask, foreground=image, background=background)
        diff = np.abs(path.process(image, mask).astype(np.int16) - ref)
        assert diff.max() <= 1 and (diff > 0).mean() < 0.005, (i, diff.max(), (diff > 0).mean())
    harmonizer.close()
