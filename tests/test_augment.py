import numpy as np
import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from deepfake.data.inputs import normalize, to_float
from deepfake.training.augment import (
    IDENTITY_PARAMS,
    N_PARAMS,
    AugmentConfig,
    apply_batch,
    degrade,
    gaussian_blur,
    jpeg_recompress,
    sample_augment,
)


def _images(b=3, side=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, side, side, generator=g)
    return torch.nn.functional.avg_pool2d(x, 3, 1, 1)  # smooth, so interpolation differences stay small


def _params(**cols):
    rows = np.tile(IDENTITY_PARAMS, (3, 1))
    names = ("flip", "angle", "brightness", "contrast", "saturation", "hue")
    for name, values in cols.items():
        rows[:, names.index(name)] = values
    return torch.from_numpy(rows)


def test_sampling_is_a_function_of_the_seed_and_respects_the_ranges():
    cfg = AugmentConfig(
        hflip=0.5,
        rotation=15,
        color_jitter=0.4,
        jpeg_prob=0.5,
        jpeg_quality=(40, 60),
        blur_prob=0.5,
        blur_sigma=(0.5, 1.5),
    )
    a = [sample_augment(cfg, np.random.default_rng(s)) for s in range(400)]
    b = [sample_augment(cfg, np.random.default_rng(s)) for s in range(400)]
    assert all(
        np.array_equal(x.params, y.params) and x.jpeg_quality == y.jpeg_quality and x.blur_sigma == y.blur_sigma
        for x, y in zip(a, b)
    )
    p = np.stack([x.params for x in a])
    assert p.shape == (400, N_PARAMS)
    assert set(np.unique(p[:, 0])) == {0.0, 1.0} and 0.4 < p[:, 0].mean() < 0.6
    assert np.abs(p[:, 1]).max() <= 15 and np.abs(p[:, 1]).max() > 14
    assert p[:, 2:5].min() >= 0.6 and p[:, 2:5].max() <= 1.4 and np.abs(p[:, 5]).max() <= 0.1
    q = np.array([x.jpeg_quality for x in a])
    assert 0.4 < (q > 0).mean() < 0.6 and q[q > 0].min() >= 40 and q.max() <= 60
    s = np.array([x.blur_sigma for x in a])
    assert 0.4 < (s > 0).mean() < 0.6 and s[s > 0].min() >= 0.5 and s.max() <= 1.5


def test_disabled_augmentations_give_the_identity():
    cfg = AugmentConfig(hflip=0, rotation=0, color_jitter=0, jpeg_prob=0, blur_prob=0)
    aug = sample_augment(cfg, np.random.default_rng(3))
    assert np.array_equal(aug.params, IDENTITY_PARAMS) and aug.jpeg_quality == 0 and aug.blur_sigma == 0
    x = _images()
    assert torch.equal(apply_batch(x, torch.from_numpy(np.tile(aug.params, (3, 1)))), x)
    img = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    assert np.array_equal(degrade(img, aug), img)


@pytest.mark.parametrize(
    "bad", [{"hflip": 1.5}, {"jpeg_quality": (90, 40)}, {"blur_sigma": (0.0, 1.0)}, {"rotation": -1.0}]
)
def test_bad_augment_config(bad):
    with pytest.raises(ValueError):
        AugmentConfig(**bad)


def test_flip_applies_per_image():
    x = _images()
    out = apply_batch(x, _params(flip=[1, 0, 1]))
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[1], x[1]) and torch.equal(out[2], x[2].flip(-1))


def test_rotation_matches_torchvision_per_image():
    x = _images(side=48)
    angles = [10.0, -7.5, 0.0]
    out = apply_batch(x, _params(angle=angles))
    for i, a in enumerate(angles):
        ref = TF.rotate(x[i], a, interpolation=InterpolationMode.BILINEAR)
        inner = (slice(None), slice(8, 40), slice(8, 40))  # away from the zero-filled corners
        assert torch.allclose(out[i][inner], ref[inner], atol=2e-3), (a, (out[i][inner] - ref[inner]).abs().max())


def test_flip_and_rotation_compose_like_torchvision():
    x = _images(side=48)
    out = apply_batch(x, _params(flip=[1, 1, 0], angle=[8.0, 0.0, -5.0]))
    inner = (slice(None), slice(8, 40), slice(8, 40))
    for i, (f, a) in enumerate([(1, 8.0), (1, 0.0), (0, -5.0)]):
        ref = TF.rotate(x[i].flip(-1) if f else x[i], a, interpolation=InterpolationMode.BILINEAR)
        assert torch.allclose(out[i][inner], ref[inner], atol=2e-3), (f, a)


@pytest.mark.parametrize(
    "col, fn, values",
    [
        ("brightness", TF.adjust_brightness, [0.7, 1.0, 1.3]),
        ("contrast", TF.adjust_contrast, [0.6, 1.2, 1.0]),
        ("saturation", TF.adjust_saturation, [0.5, 1.4, 1.0]),
    ],
)
def test_colour_jitter_matches_torchvision_per_image(col, fn, values):
    x = _images()
    out = apply_batch(x, _params(**{col: values}))
    for i, v in enumerate(values):
        assert torch.allclose(out[i], fn(x[i], v), atol=1e-5), (col, v, (out[i] - fn(x[i], v)).abs().max())


def test_combined_colour_jitter_equals_the_steps_in_sequence():
    x = 0.2 + 0.6 * _images()  # mid-range values: no step saturates, so torchvision's clamps between steps are no-ops
    b, c, s = [0.9, 1.1, 1.05], [1.1, 0.8, 0.95], [0.7, 1.2, 1.0]
    out = apply_batch(x, _params(brightness=b, contrast=c, saturation=s))
    for i in range(3):
        ref = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x[i], b[i]), c[i]), s[i])
        assert torch.allclose(out[i], ref, atol=1e-5)


def _saturated(side=40):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, side), torch.linspace(0, 1, side), indexing="ij")
    img = torch.stack(
        [0.5 + 0.15 * torch.sin(6 * xx), 0.5 + 0.15 * torch.cos(5 * yy), 0.5 + 0.15 * torch.sin(4 * (xx + yy))]
    )
    return img.expand(3, 3, side, side).clone()


def test_hue_shift_turns_hsv_hue_by_about_its_value_and_keeps_luma_and_greys():
    import colorsys

    x = _saturated()
    shifts = [-0.1, 0.05, 0.0]
    out = apply_batch(x, _params(hue=shifts))
    luma = lambda t: (torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1) * t).sum(0)  # noqa: E731
    for i, h in enumerate(shifts[:2]):
        assert torch.allclose(luma(out[i]), luma(x[i]), atol=1e-4)  # a YIQ chroma rotation keeps luma
        before, after = (t.reshape(3, -1).T[::7].numpy() for t in (x[i], out[i]))
        turned = [
            ((colorsys.rgb_to_hsv(*q)[0] - colorsys.rgb_to_hsv(*p)[0] + 0.5) % 1) - 0.5 for p, q in zip(before, after)
        ]
        assert np.median(turned) == pytest.approx(
            h, rel=0.35
        )  # the HSV hue moves as torchvision's adjust_hue(h) moves it
    assert torch.equal(out[2], x[2])
    grey = torch.full((3, 3, 8, 8), 0.4)
    assert torch.allclose(apply_batch(grey, _params(hue=[0.3, -0.2, 0.1])), grey, atol=1e-6)


def test_to_float_and_normalize():
    u8 = torch.randint(0, 256, (2, 5, 6, 3), dtype=torch.uint8)
    x = to_float(u8)
    assert x.shape == (2, 3, 5, 6) and x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, u8.permute(0, 3, 1, 2).float() / 255)
    n = normalize(x, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert torch.allclose(n, (x - 0.5) / 0.25)
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        to_float(torch.zeros(2, 3, 5, 6, dtype=torch.uint8))


def test_blur_and_jpeg_degrade_the_image():
    rng = np.random.default_rng(0)
    img = (rng.random((64, 64, 3)) * 255).astype(np.uint8)  # noise: blur and JPEG both destroy it
    blurred = gaussian_blur(img, 1.5)
    assert blurred.shape == img.shape and blurred.dtype == np.uint8
    assert blurred.astype(float).std() < 0.5 * img.astype(float).std()
    low, high = jpeg_recompress(img, 20), jpeg_recompress(img, 95)
    err = lambda a: np.abs(a.astype(int) - img.astype(int)).mean()  # noqa: E731
    assert low.shape == img.shape and err(high) < err(low) and err(low) > 10


@pytest.mark.parametrize(
    "row",
    [
        dict(flip=1),
        dict(angle=9.0),
        dict(flip=1, angle=-6.0),
        dict(brightness=1.2, contrast=0.8),
        dict(saturation=0.6, hue=0.07),
        dict(flip=1, angle=4.0, brightness=0.85, contrast=1.15, saturation=1.2, hue=-0.05),
    ],
)
def test_uint8_opencv_path_matches_the_batched_path(row):
    from deepfake.training.augment import apply_image

    names = ("flip", "angle", "brightness", "contrast", "saturation", "hue")
    params = IDENTITY_PARAMS.copy()
    for k, v in row.items():
        params[names.index(k)] = v
    img = (_saturated(48)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # (H, W, 3)
    ours = apply_image(img, params)
    assert ours.dtype == np.uint8 and ours.shape == img.shape
    batched = apply_batch(to_float(torch.from_numpy(img)[None]), torch.from_numpy(params)[None])[0]  # (3, H, W)
    diff = np.abs(ours.astype(float) - batched.permute(1, 2, 0).numpy() * 255)[6:-6, 6:-6]  # corners: zero-fill edges
    assert diff.mean() < 0.6 and diff.max() <= 3, (row, diff.mean(), diff.max())
