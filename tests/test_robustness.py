import numpy as np
import pytest
from PIL import Image

from deepfake.evaluation.robustness import Perturbation, parse_levels, perturbation_grid


def _image(size=64, seed=0):
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, size)[None, :, None] * np.ones((size, 1, 3))
    return np.clip(base + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)


def _mse(a, b):
    return float(np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2))


def test_jpeg_loses_more_at_lower_quality():
    im = _image()
    errs = [_mse(im, Perturbation("jpeg", q)(im)) for q in (90, 50, 10)]
    assert 0 < errs[0] < errs[1] < errs[2]
    assert Perturbation("jpeg", 50)(im).shape == im.shape


def test_blur_removes_high_frequencies():
    im = _image()
    rough = lambda x: np.abs(np.diff(np.asarray(x, float), axis=1)).mean()  # noqa: E731
    assert rough(Perturbation("blur", 2)(im)) < 0.5 * rough(im)


def test_downscale_keeps_size_and_loses_detail():
    im = _image()
    out = Perturbation("downscale", 0.25)(im)
    assert (
        out.shape == im.shape
        and out.dtype == np.uint8
        and _mse(im, out) > _mse(im, Perturbation("downscale", 0.75)(im)) > 0
    )


def test_resize_changes_only_the_input_size():
    im = _image()
    p = Perturbation("resize", 128)
    assert p(im) is im and p.input_size(96) == 128 and Perturbation("jpeg", 70).input_size(96) == 96
    assert Perturbation("none").name == "clean" and Perturbation("blur", 0.5).name == "blur_0.5"


def test_parse_levels():
    assert parse_levels("90,70, 50", "jpeg") == (90.0, 70.0, 50.0)
    assert parse_levels(64, "resize") == (64.0,)
    assert parse_levels("", "blur") == () and parse_levels(None, "blur") == ()
    assert parse_levels([0.5, 0.25], "downscale") == (0.5, 0.25)
    with pytest.raises(ValueError, match="numbers"):
        parse_levels("90,high", "jpeg")
    with pytest.raises(ValueError, match="downscale factor"):
        parse_levels("1.5", "downscale")
    with pytest.raises(ValueError, match="unknown perturbation"):
        Perturbation("noise", 1)


def test_grid_starts_with_clean_and_keeps_order():
    grid = perturbation_grid("90,30", "1", "", "128")
    assert [p.name for p in grid] == ["clean", "jpeg_90", "jpeg_30", "blur_1", "resize_128"]


def test_perturbations_match_pillow_on_the_same_pixels():
    """The uint8 perturbations are Pillow's filters: the numbers robustness reports keep their meaning."""
    from PIL import ImageFilter

    im = _image()
    want = np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(radius=1.0)))
    assert np.array_equal(Perturbation("blur", 1)(im), want)
