import cv2
import numpy as np
import pytest

from deepfake.data.detect import FaceBox, format_points, get_detector, get_landmarker, key_points, parse_points
from deepfake.data.faces import (
    TEMPLATE,
    alignment_matrix,
    crop_face,
    crop_window,
    similarity,
    transform_points,
    warp_crop,
    window_matrix,
)
from deepfake.pipeline.quick import face_image


def _rotation(angle_deg: float, scale: float, t: tuple[float, float]) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), t[0]], [scale * np.sin(a), scale * np.cos(a), t[1]]])


def test_similarity_recovers_a_known_transform():
    m = _rotation(17.0, 1.7, (12.0, -5.0))
    src = np.array([[10.0, 20.0], [60.0, 25.0], [35.0, 80.0], [5.0, 5.0]])
    assert np.allclose(similarity(src, transform_points(src, m)), m, atol=1e-4)


def test_alignment_puts_the_key_points_on_the_template():
    want = (TEMPLATE[68] - 0.5) * 128 / 1.3 + 64  # where the key points go in a 128 px crop, margin 1.3
    pose = _rotation(-23.0, 2.4, (150.0, 90.0))  # a tilted, larger face somewhere in the photo
    face = transform_points(want, pose)
    points = np.zeros((68, 2))
    points[36:42], points[42:48], points[48:68] = face[0], face[1], face[2]
    m = alignment_matrix(points, size=128, margin=1.3)
    got = transform_points(key_points(points), m)
    assert np.abs(got - want).max() < 1e-3
    assert abs(got[0, 1] - got[1, 1]) < 1e-3  # eyes level after alignment
    noisy = points + np.random.default_rng(0).normal(0, 3, points.shape)  # real landmarks: a least-squares fit
    assert np.abs(transform_points(key_points(noisy), alignment_matrix(noisy, 128, 1.3)) - want).max() < 4


def test_key_points_of_both_schemes():
    five = np.array([[400, 340], [340, 340], [200, 335], [255, 339], [283, 446]], float)
    k = key_points(five)
    assert np.allclose(k, [[227.5, 337], [370, 340], [283, 446]])
    with pytest.raises(ValueError, match="5 or 68"):
        key_points(np.zeros((7, 2)))


def test_window_matrix_maps_pixels_as_crop_face_does():
    rng = np.random.default_rng(0)
    img = np.zeros((300, 400, 3), np.uint8)
    box = FaceBox(150, 80, 120, 110)
    spots = rng.uniform([160, 90], [260, 180], (5, 2)).round()
    for x, y in spots.astype(int):
        img[y - 2 : y + 3, x - 2 : x + 3] = 255  # 5x5 white spots
    crop = crop_face(img, box, size=96, margin=1.3)
    m = window_matrix(*crop_window(img.shape, box, 1.3), 96)
    for (x, y), (u, v) in zip(spots, transform_points(spots, m)):
        assert crop[int(round(v)), int(round(u))].min() > 150, f"spot ({x}, {y}) not at ({u:.1f}, {v:.1f}) in the crop"


def test_warp_crop_with_an_axis_aligned_window_equals_the_square_crop():
    rgb, _ = face_image()
    box = get_detector("dlib_hog").largest(rgb)
    m = window_matrix(*crop_window(rgb.shape, box, 1.3), 96)
    a = warp_crop(rgb, m, 96).astype(int)
    b = crop_face(rgb, box, 96, 1.3).astype(int)
    assert np.abs(a - b).mean() < 4  # the same window; only the interpolation differs


@pytest.mark.parametrize("n", [5, 68])
def test_landmarks_fall_on_the_face_in_order(n):
    rgb, source = face_image()
    box = get_detector("dlib_hog").largest(rgb)
    pts = get_landmarker(n).locate(rgb, box)
    assert pts.shape == (n, 2) and pts.dtype == np.float32
    inside = (pts[:, 0] > box.x - 0.2 * box.w) & (pts[:, 0] < box.x + 1.2 * box.w)
    assert inside.all(), source
    left_eye, right_eye, low = key_points(pts)
    assert left_eye[0] < right_eye[0] and low[1] > max(left_eye[1], right_eye[1]) + 0.15 * box.h


def test_aligning_a_tilted_face_levels_the_eyes():
    rgb, _ = face_image()
    h, w = rgb.shape[:2]
    tilted = cv2.warpAffine(
        rgb, cv2.getRotationMatrix2D((w / 2, h / 2), 20, 1.0), (w, h), borderMode=cv2.BORDER_REFLECT
    )
    box = get_detector("dlib_hog").largest(tilted) or get_detector("dlib_cnn").largest(tilted)
    assert box is not None
    pts = get_landmarker(68).locate(tilted, box)
    eyes = key_points(pts)[:2]
    assert abs(np.degrees(np.arctan2(*(eyes[1] - eyes[0])[::-1]))) > 10  # tilted before
    m = alignment_matrix(pts, 128, 1.3)
    crop = warp_crop(tilted, m, 128)
    assert crop.shape == (128, 128, 3)
    again = get_landmarker(68).locate(crop, FaceBox(10, 10, 108, 108))  # landmarks of the aligned crop itself
    le, re = key_points(again)[:2]
    assert abs(np.degrees(np.arctan2(re[1] - le[1], re[0] - le[0]))) < 6  # level after


def test_points_round_trip_through_text():
    pts = np.random.default_rng(1).uniform(0, 96, (68, 2)).astype(np.float32)
    back = parse_points(format_points(pts))
    assert back.shape == (68, 2) and np.abs(back - pts).max() <= 0.05 + 1e-6
    assert parse_points("") is None and parse_points(float("nan")) is None and format_points(None) == ""
    with pytest.raises(ValueError, match="5 or 68"):
        parse_points("1 2 3 4")
