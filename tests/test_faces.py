from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake.faces import DetectorConfig, FaceBox, FaceDetector, crop_face, get_detector, square_box

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


def test_detector_finds_nothing_in_noise_and_rejects_bad_shapes():
    det = FaceDetector(DetectorConfig(min_neighbors=8))
    rng = np.random.default_rng(0)
    assert det.largest(rng.integers(0, 255, (120, 120, 3), dtype=np.uint8)) is None
    with pytest.raises(ValueError, match="RGB"):
        det.detect(np.zeros((10, 10), np.uint8))


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared real-face photos are not present")
def test_detector_finds_faces_in_real_photos():
    files = sorted((SHARED / "real").glob("*.jpg"))[:12]
    found = 0
    for f in files:
        rgb = np.asarray(Image.open(f).convert("RGB"))
        box = get_detector().largest(rgb)
        if box is not None:
            found += 1
            assert box.w > 0.15 * rgb.shape[1]  # portraits: the face is a large part of the photo
    assert found >= 9


def test_unknown_detector_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown face detector 'mtcnn'"):
        get_detector("mtcnn")
