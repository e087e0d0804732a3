import numpy as np
import pytest

from deepfake.pipeline.quick import face_image
from deepfake.training.blend import BlendConfig, deform_mask, face_mask, self_blend, training_items


def _crop(size: int = 96) -> np.ndarray:
    import cv2

    rgb, _ = face_image()
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)


def test_pseudo_fake_changes_only_inside_the_mask_and_is_deterministic():
    img = _crop()
    cfg = BlendConfig(mode="add")
    fake, mask = self_blend(img, None, cfg, np.random.default_rng(3))
    again, mask2 = self_blend(img, None, cfg, np.random.default_rng(3))
    other, _ = self_blend(img, None, cfg, np.random.default_rng(4))
    assert fake.shape == img.shape and fake.dtype == np.uint8 and mask.shape == img.shape[:2]
    assert np.array_equal(fake, again) and np.array_equal(mask, mask2) and not np.array_equal(fake, other)
    assert mask.max() <= 1.0 and mask.min() >= 0.0
    roles = set()
    for seed in range(12):  # the changed copy goes inside the mask (real around it) or around it (real inside)
        fake, mask = self_blend(img, None, cfg, np.random.default_rng(seed))
        diff = np.abs(fake.astype(int) - img.astype(int)).max(axis=2)
        outside, inside = diff[mask < 0.01], diff[mask > 0.9 * mask.max()]
        assert 0.01 < (mask > 0.5 * mask.max()).mean() < 0.8  # a part of the face, or all of it
        if outside.max() <= 1:
            roles.add("copy inside")
            assert inside.mean() > 2
        else:
            roles.add("copy around")
            assert inside.mean() < outside.mean()  # the real face shows through the mask
    assert roles == {"copy inside", "copy around"}


def test_mask_follows_the_landmarks_when_there_are_some():
    pts = np.array([[20 + 10 * np.cos(a), 30 + 8 * np.sin(a)] for a in np.linspace(0, 2 * np.pi, 68)])
    m = face_mask((96, 96, 3), pts, 1.3)
    assert m[30, 20] == 1 and m[80, 80] == 0 and 150 < m.sum() < 350  # the hull of a 20 x 16 ellipse
    five = np.array([[60, 40], [52, 40], [36, 40], [44, 40], [48, 56]], float)
    m5 = face_mask((96, 96, 3), five, 1.3)
    assert m5[48, 48] == 1 and m5[2, 2] == 0
    plain = face_mask((96, 96, 3), None, 1.3)  # the face box of a 1.3-margin crop, centred
    assert plain[50, 48] == 1 and plain[2, 48] == 0 and plain[48, 2] == 0


def test_deformed_mask_is_smooth_and_near_the_original():
    m = face_mask((96, 96, 3), None, 1.3)
    d = deform_mask(m, np.random.default_rng(0))
    assert 0 < d.max() <= 1 and ((d > 0.5) == (m > 0.5)).mean() > 0.8
    assert np.abs(np.diff(d, axis=1)).max() < 0.5  # blurred edges


def test_training_items_per_mode():
    targets = np.array([0, 0, 0, 0, 1, 1], np.float32)
    rows, blended = training_items(targets, BlendConfig(mode="off"))
    assert rows.tolist() == [0, 1, 2, 3, 4, 5] and not blended.any()
    rows, blended = training_items(targets, BlendConfig(mode="add", share=0.5))
    assert rows[:6].tolist() == [0, 1, 2, 3, 4, 5] and blended.sum() == 2 and set(rows[blended]) <= {0, 1, 2, 3}
    rows, blended = training_items(targets, BlendConfig(mode="only"))
    assert rows.tolist() == [0, 1, 2, 3, 0, 1, 2, 3] and blended.tolist() == [False] * 4 + [True] * 4
    with pytest.raises(ValueError, match="self_blend"):
        BlendConfig(mode="sometimes")


def test_the_dataset_makes_pseudo_fakes_from_reals_only(tmp_path):
    import pandas as pd
    from PIL import Image

    from deepfake.training.loading import ImageDataset

    img = _crop(64)
    for name in ("r0", "r1", "f0"):
        Image.fromarray(img).save(tmp_path / f"{name}.png")
    frame = pd.DataFrame({"path": ["r0.png", "r1.png", "f0.png"], "target": [0, 0, 1]})
    ds = ImageDataset(frame, tmp_path, 64, blend=BlendConfig(mode="only"))
    assert len(ds) == 4 and ds.item_targets.tolist() == [0, 0, 1, 1]
    real, t0, i0, _ = ds[(0, 5)]
    fake, t1, i1, _ = ds[(2, 5)]
    assert i0 == i1 == 0 and float(t0) == 0 and float(t1) == 1  # the same real row, blended
    assert not np.array_equal(real.numpy(), fake.numpy())
    assert np.array_equal(ds[(2, 5)][0].numpy(), fake.numpy())  # the seed decides


def test_part_masks_cover_the_eyes_or_the_mouth():
    rng = np.random.default_rng(0)
    pts = np.zeros((68, 2))
    pts[:17] = np.column_stack([np.linspace(10, 86, 17), 60 + 25 * np.sin(np.linspace(0, np.pi, 17))])  # jaw
    pts[17:27] = np.column_stack([np.linspace(20, 76, 10), np.full(10, 28)])  # brows
    pts[27:36] = np.column_stack([np.full(9, 48), np.linspace(35, 58, 9)])  # nose
    pts[36:48] = np.column_stack([np.r_[np.linspace(24, 40, 6), np.linspace(56, 72, 6)], np.full(12, 38)])  # eyes
    pts[48:68] = np.column_stack([np.linspace(36, 60, 20), 70 + 3 * np.sin(np.linspace(0, 6, 20))])  # mouth
    whole = face_mask((96, 96, 3), pts, 1.3)
    seen = set()
    for _ in range(20):
        m = face_mask((96, 96, 3), pts, 1.3, rng, part=1.0)
        assert m.sum() < 0.5 * whole.sum() and (m <= whole + 1e-6).mean() > 0.95
        seen.add("eyes" if m[38, 30] else "mouth" if m[70, 48] else "other")
    assert seen == {"eyes", "mouth"}
    plain = face_mask((96, 96, 3), None, 1.3)
    part = face_mask((96, 96, 3), None, 1.3, np.random.default_rng(1), part=1.0)
    assert 0 < part.sum() < 0.5 * plain.sum()
