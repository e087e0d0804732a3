import concurrent.futures
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from deepfake.data import detect
from deepfake.data.detect import DETECTORS, FaceBox, FaceModelError, HaarDetector, get_detector, nearest_box
from deepfake.data.faces import crop_face, square_box
from deepfake.pipeline.quick import face_image

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
