import concurrent.futures
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from deepfake.data import detect
from deepfake.data.detect import DETECTORS, FaceBox, FaceModelError, HaarDetector, get_detector, nearest_box
from deepfake.data.faces import (
    LARGE_FACE,
    crop_face,
    crop_frames,
    crop_image,
    find_largest,
    pyramid_scale,
    square_box,
)
from deepfake.data.inputs import Preprocessing
from deepfake.pipeline.quick import face_image, pan_zoom_frames

SHARED = Path(__file__).resolve().parents[2] / "shared" / "real-faces" / "yonsei-rffd"


def test_square_box_enlarges_the_longer_side():
    assert square_box(FaceBox(10, 20, 40, 50), margin=1.3) == (30, 45, 65)


def test_crop_is_square_resized_and_centred_on_the_box():
    img = np.zeros((100, 200, 3), np.uint8)
    img[40:60, 140:160] = 255  # a white square "face"
    out = crop_face(img, FaceBox(140, 40, 20, 20), size=50, margin=2.0)  # 40 px window around it
    assert out.shape == (50, 50, 3)
    assert out[25, 25].min() == 255 and out[2, 2].max() == 0  # face in the centre, background at the corner


def test_crop_near_the_border_is_padded_not_shifted():
    img = np.zeros((60, 60, 3), np.uint8)
    img[0:10, 0:10] = 200
    out = crop_face(img, FaceBox(0, 0, 10, 10), size=30, margin=3.0)  # window reaches outside the image
    assert out.shape == (30, 30, 3) and out[15, 15].min() == 200


def test_no_box_gives_a_centre_square():
    img = np.arange(40 * 80 * 3, dtype=np.uint8).reshape(40, 80, 3)
    out = crop_face(img, None, size=40)
    assert np.array_equal(out, img[:, 20:60])


@pytest.mark.parametrize("name", DETECTORS)
def test_each_detector_finds_the_face_and_nothing_in_noise(name):
    rgb, source = face_image()
    det = get_detector(name)
    boxes = det.detect(rgb)
    assert len(boxes) == 1, f"{name} on {source}: {boxes}"
    (box,) = boxes
    h, w = rgb.shape[:2]
    assert 0.25 * w < box.w < 1.0 * w and 0.25 * h < box.h < 1.0 * h
    cx, cy = box.center  # a portrait: the face near the middle
    assert abs(cx - w / 2) < 0.25 * w and abs(cy - h / 2) < 0.3 * h
    noise = np.random.default_rng(0).integers(0, 255, (160, 160, 3), dtype=np.uint8)
    assert det.largest(noise) is None
    with pytest.raises(ValueError, match="RGB"):
        det.detect(np.zeros((10, 10), np.uint8))


def test_detectors_agree_on_where_the_face_is():
    rgb, _ = face_image()
    centres = np.array([get_detector(n).largest(rgb).center for n in DETECTORS])
    assert np.ptp(centres, axis=0).max() < 0.12 * rgb.shape[1]


def test_upsampling_finds_a_small_face():
    rgb, _ = face_image()
    box = get_detector("dlib_hog").largest(rgb)
    canvas = np.full((480, 480, 3), 128, np.uint8)
    scale = 36 / box.w  # the face about 36 px wide: below what HOG finds without upsampling (~70 px)
    small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas[200 : 200 + small.shape[0], 150 : 150 + small.shape[1]] = small[:280, :330]
    det = get_detector("dlib_hog")
    assert det.detect(canvas, upsample=0) == []
    (found,) = det.detect(canvas, upsample=1)
    assert 25 < found.w < 60 and 150 <= found.x <= 150 + small.shape[1]
    with pytest.raises(ValueError, match="upsample"):
        det.detect(canvas, upsample=3)


def test_large_images_are_searched_downscaled_and_boxes_mapped_back():
    rgb, _ = face_image()
    big = cv2.resize(rgb, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    a, b = get_detector("dlib_hog").largest(rgb), get_detector("dlib_hog").largest(big)
    assert b is not None and abs(b.w / (3 * a.w) - 1) < 0.15  # the detector's pyramid steps differ
    assert np.hypot(b.center[0] - 3 * a.center[0], b.center[1] - 3 * a.center[1]) < 0.05 * big.shape[1]


def test_haar_settings_change_what_it_finds():
    det = HaarDetector(min_neighbors=8)
    rng = np.random.default_rng(0)
    assert det.largest(rng.integers(0, 255, (120, 120, 3), dtype=np.uint8)) is None


def test_box_border_and_nearest_box():
    assert FaceBox(0, 10, 20, 20).touches_border(100, 100)
    assert FaceBox(90, 10, 20, 20).touches_border(100, 100)
    assert not FaceBox(10, 10, 20, 20).touches_border(100, 100)
    boxes = [FaceBox(0, 0, 50, 50), FaceBox(200, 200, 30, 30)]
    box, dist = nearest_box(boxes, FaceBox(190, 195, 40, 40))
    assert box == boxes[1] and dist < 0.5


def test_missing_model_package_and_corrupt_model_file_are_clear_errors(tmp_path, monkeypatch):
    bad = tmp_path / "mmod_human_face_detector.dat"
    bad.write_bytes(b"not a dlib model" * 10)
    monkeypatch.setattr(detect, "model_file", lambda name: bad)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a fresh thread: no detector loaded yet
        with pytest.raises(FaceModelError, match="mmod_human_face_detector.dat could not be loaded"):
            pool.submit(get_detector, "dlib_cnn").result()
    monkeypatch.undo()
    monkeypatch.setattr(detect.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FaceModelError, match="pip install face-recognition-models"):
        detect.model_file("shape_predictor_68_face_landmarks.dat")


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared real-face photos are not present")
def test_detector_finds_faces_in_real_photos():
    files = sorted((SHARED / "real").glob("*.jpg"))[:12]
    found = 0
    for f in files:
        rgb = np.asarray(Image.open(f).convert("RGB"))
        box = get_detector("haar").largest(rgb)
        if box is not None:
            found += 1
            assert box.w > 0.15 * rgb.shape[1]  # portraits: the face is a large part of the photo
    assert found >= 9


def test_unknown_detector_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown face detector 'mtcnn'; the detectors are dlib_hog, dlib_cnn, haar"):
        get_detector("mtcnn")


# --------------------------------------------------------------------------------------------
# face_search: adaptive against full
# --------------------------------------------------------------------------------------------

#: Video frames as the preprocess stage crops them by default (dlib_hog, frames upsampled once).
VIDEO = Preprocessing(
    crop="face", detector="dlib_hog", margin=1.3, no_face="skip", crop_size=64, input_size=64, video_upsample=1
)
ADAPTIVE = replace(VIDEO, face_search="adaptive")


def iou(a: FaceBox, b: FaceBox) -> float:
    iw = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    ih = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    return iw * ih / (a.area + b.area - iw * ih)


def clip(n: int, width: float, centres=((0.35, 0.5), (0.6, 0.45))) -> list[np.ndarray]:
    """``n`` 720p frames panning and zooming over a portrait whose face is about ``width`` px wide."""
    photo, _ = face_image(0)
    box = get_detector("dlib_hog").largest(photo)
    s = width / box.w
    return pan_zoom_frames(photo, n, (1280, 720), scales=(s, 1.1 * s), centres=centres)


@pytest.fixture()
def searched(monkeypatch):
    """Pixels each dlib_hog search covers (the copy's area times its upsampling), in call order."""
    pixels: list[int] = []
    det = get_detector("dlib_hog")
    find = det._find

    def counting(rgb, upsample):
        pixels.append(rgb.shape[0] * rgb.shape[1] * 4**upsample)
        return find(rgb, upsample)

    monkeypatch.setattr(det, "_find", counting)
    return pixels


def test_pyramid_scale_is_the_level_just_above_what_is_asked():
    assert pyramid_scale(1.0, 0.5, 5 / 6) == pytest.approx((5 / 6) ** 3)  # 0.579 >= 0.5 > 0.482
    assert pyramid_scale(1.0, (5 / 6) ** 2, 5 / 6) == pytest.approx((5 / 6) ** 2)
    assert pyramid_scale(0.5, 0.7, 5 / 6) == pytest.approx(0.5 * 1.2**2)  # above the whole search's scale


def test_adaptive_follows_the_same_face_as_the_full_search_searching_a_fraction(searched):
    frames = clip(6, 150)
    searched.clear()
    full = crop_frames(frames, VIDEO)
    whole = searched[0]  # one whole-frame search
    searched.clear()
    adaptive = crop_frames(frames, ADAPTIVE)
    assert all(c.box is not None for c in full) and all(c.box is not None for c in adaptive)
    ious = [iou(a.box, b.box) for a, b in zip(full, adaptive)]
    assert min(ious) > 0.6 and np.median(ious) >= 0.8, ious  # 0.69: the same face one pyramid level apart
    # frames 2-6: windows around the face, each a small part of a whole-frame search
    assert all(p < 0.2 * whole for p in searched[-5:]) and sum(searched) < 0.3 * 6 * whole, (searched, whole)


def test_a_face_lost_from_its_window_is_searched_for_in_the_whole_frame(searched):
    frames = clip(2, 120, centres=((0.15, 0.5), (0.85, 0.5)))  # the face jumps across the frame
    full = crop_frames(frames, VIDEO)
    searched.clear()
    adaptive = crop_frames(frames, ADAPTIVE)
    assert all(c.box is not None for c in adaptive)
    assert adaptive[1].box.x > 640 and iou(full[1].box, adaptive[1].box) > 0.6
    assert searched[-1] == 640 * 360 * 4  # the second frame's last search: the whole frame, as full searches it


def test_a_contract_without_face_search_searches_every_image_whole():
    old = {k: v for k, v in ADAPTIVE.to_dict().items() if k != "face_search"}
    prep = Preprocessing.from_dict(old)
    assert prep == VIDEO and prep.face_search == "full"
    det = get_detector("dlib_hog")
    frames = clip(3, 100)
    assert [c.box for c in crop_frames(frames, prep)] == [det.detect(f, 1)[0] for f in frames]
    photo, _ = face_image(0)
    assert crop_image(photo, prep).box == det.detect(photo, 0)[0]
    with pytest.raises(ValueError, match="face_search must be one of"):
        replace(VIDEO, face_search="fast")


def test_a_photo_is_searched_for_large_faces_first(searched):
    photo, source = face_image(0)
    photo = cv2.resize(photo, (600, 600), interpolation=cv2.INTER_LINEAR)  # the size of the shared portraits
    searched.clear()
    full = find_largest(photo, replace(VIDEO, upsample=0))
    full_pixels = sum(searched)
    searched.clear()
    fast = find_largest(photo, replace(ADAPTIVE, upsample=0))
    assert len(fast) == 1 and iou(full[0], fast[0]) > 0.6, source  # 0.69: the same face one pyramid level apart
    assert len(searched) == 1 and searched[0] < 0.5 * full_pixels  # one search, at a coarser level
    assert fast[0].w >= LARGE_FACE * min(photo.shape[:2])


def test_several_faces_skip_counts_every_face_even_with_adaptive():
    photo, _ = face_image(0)
    box = get_detector("dlib_hog").largest(photo)
    canvas = np.full((640, 640, 3), 120, np.uint8)
    for side, x in ((380, 10), (160, 440)):  # a large face, and a small one (well below LARGE_FACE of the side)
        canvas[120 : 120 + side, x : x + side] = cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA)
    assert box.w * 160 / photo.shape[1] < 0.8 * LARGE_FACE * 640
    assert crop_image(canvas, replace(VIDEO, upsample=0)).n_faces == 2  # both found by the full search
    largest = crop_image(canvas, replace(ADAPTIVE, upsample=0))
    assert largest.box.x < 320 and largest.n_faces == 1  # the small face is not looked for
    skip = crop_image(canvas, replace(ADAPTIVE, upsample=0, several_faces="skip"))
    assert skip.n_faces == 2 and skip.reason == "several_faces" and skip.image is None
