import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from deepfake.data.inputs import IMAGENET_MEAN, IMAGENET_STD, load_input
from deepfake.data.media import UnreadableImageError
from deepfake.training.augment import AugmentConfig
from deepfake.training.loading import (
    Batch,
    EpochBatchSampler,
    ImageDataset,
    class_weights,
    finish_batch,
    make_batch_loader,
)


def _reference(path, size):
    """torchvision's ImageNet evaluation transform on a PIL image: what every scoring path must equal."""
    with Image.open(path) as im:
        return T.Compose([T.Resize((size, size), antialias=True), T.ToTensor()])(im.convert("RGB"))


def _photo(side: int, seed: int = 0) -> Image.Image:
    """A smooth colour image (gradients plus a few blobs), like a photo at low frequency."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    img = np.stack([np.sin(6 * xx + rng.random() * 3), np.cos(5 * yy + rng.random() * 3), np.sin(4 * (xx + yy))], -1)
    return Image.fromarray(((img * 0.5 + 0.5) * 255).astype(np.uint8))


def test_loaded_inputs_equal_the_torchvision_evaluation_transform(tmp_path):
    _photo(70).save(tmp_path / "a.png")
    _photo(70, 1).save(tmp_path / "b.jpg", quality=90)
    _photo(600, 2).save(tmp_path / "big.jpg", quality=92)  # decoded in full: no reduced-scale shortcut
    for name, size in (("a.png", 48), ("b.jpg", 48), ("big.jpg", 224)):
        ours = torch.from_numpy(load_input(tmp_path / name, size)).permute(2, 0, 1).float() / 255
        assert torch.allclose(ours, _reference(tmp_path / name, size), atol=1e-6), name


def test_unreadable_image_names_the_file(tmp_path):
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    with pytest.raises(UnreadableImageError, match="junk.jpg"):
        load_input(tmp_path / "junk.jpg", 32)


def _frame(n=10):
    return pd.DataFrame({"path": [f"{i}.png" for i in range(n)], "target": [i % 2 for i in range(n)]})


def test_sampler_is_reproducible_per_epoch_and_differs_between_epochs():
    s = EpochBatchSampler(50, 8, seed=3)
    s.set_epoch(1)
    a, b = list(s), list(s)
    s.set_epoch(2)
    c = list(s)
    assert a == b and a != c
    flat = [i for batch in a for i, _ in batch]
    assert sorted(flat) == list(range(50))  # a permutation; the final batch of 2 is kept...
    assert [len(x) for x in a] == [8] * 6 + [2]
    s2 = EpochBatchSampler(49, 8, seed=3, drop_last=True)  # ...a final batch of 1 is dropped with drop_last
    s2.set_epoch(1)
    assert [len(x) for x in s2] == [8] * 6
    s.set_epoch(1, start_batch=4)
    assert list(s) == a[4:] and len(s) == 3 and s.global_sizes() == [8, 8, 2]


def test_ranks_split_every_global_batch_between_them():
    single = EpochBatchSampler(37, 8, seed=5, drop_last=True)
    ranks = [EpochBatchSampler(37, 8, seed=5, rank=r, world_size=2, drop_last=True) for r in range(2)]
    for s in (single, *ranks):
        s.set_epoch(4)
    assert len(ranks[0]) == len(ranks[1]) == len(single) == 5  # the final 5-image batch stays (>= 2 per rank)
    for whole, r0, r1 in zip(single, *ranks):
        assert sorted(whole) == sorted(r0 + r1) and abs(len(r0) - len(r1)) <= 1
    small = [EpochBatchSampler(35, 8, seed=5, rank=r, world_size=2, drop_last=True) for r in range(2)]
    assert len(small[0]) == 4  # a final batch of 3 cannot give each rank 2 images: dropped
    assert small[0].steps_per_epoch() == 4 and small[0].steps_per_epoch(1) == 5  # one process keeps it
    assert single.steps_per_epoch(2) == single.steps_per_epoch() == 5
    with pytest.raises(ValueError, match="smaller than the number of processes"):
        EpochBatchSampler(10, 2, world_size=4)


def test_class_balanced_sampling():
    targets = np.array([0] * 90 + [1] * 10)
    w = class_weights(targets)
    s = EpochBatchSampler(100, 10, seed=0, weights=w)
    drawn = []
    for epoch in range(20):
        s.set_epoch(epoch)
        drawn += [i for batch in s for i, _ in batch]
    assert 0.45 < targets[drawn].mean() < 0.55
    with pytest.raises(ValueError, match="both classes"):
        class_weights(np.zeros(5))


def _dataset(tmp_path, n=10, augment=None):
    for i in range(n):
        _photo(40, i).save(tmp_path / f"{i}.png")
    return ImageDataset(_frame(n), tmp_path, 32, augment)


def test_dataset_items_and_seeded_augmentation(tmp_path):
    aug = AugmentConfig(hflip=0.5, rotation=10, color_jitter=0.3, jpeg_prob=1.0, jpeg_quality=(30, 40), blur_prob=0.5)
    ds = _dataset(tmp_path, augment=aug)
    img, target, index, params = ds[(3, 1234)]
    assert img.shape == (32, 32, 3) and img.dtype == torch.uint8 and target == 1 and index == 3 and params.shape == (6,)
    again = ds[(3, 1234)]
    other = ds[(3, 99)]
    assert torch.equal(img, again[0]) and torch.equal(params, again[3])
    assert not torch.equal(params, other[3])
    plain = ImageDataset(_frame(), tmp_path, 32)[3]
    assert not torch.equal(plain[0], img)  # JPEG at quality <= 40 changed the pixels


def test_cpu_batches_are_the_same_with_and_without_workers(tmp_path):
    aug = AugmentConfig(hflip=0.5, rotation=10, color_jitter=0.3, jpeg_prob=0.5, blur_prob=0.5)
    ds = _dataset(tmp_path, augment=aug)
    out = []
    for workers in (0, 2):
        s = EpochBatchSampler(len(ds), 4, seed=1)
        s.set_epoch(3)
        loader = make_batch_loader(ds, s, num_workers=workers, finish_in_workers=True)
        out.append(list(loader))
    assert len(out[0]) == len(out[1]) == 3
    for a, b in zip(*out):
        assert a.ready and b.ready and torch.equal(a.indices, b.indices)
        assert a.images.shape == (len(a.indices), 3, 32, 32)
        assert torch.allclose(a.images, b.images, atol=1e-5)


def test_device_side_finishing_equals_worker_side_finishing(tmp_path):
    aug = AugmentConfig(hflip=0.5, rotation=10, color_jitter=0.3)
    ds = _dataset(tmp_path, augment=aug)
    s = EpochBatchSampler(len(ds), 5, seed=2)
    s.set_epoch(1)
    raw = next(iter(make_batch_loader(ds, s)))
    s.set_epoch(1)
    done = next(iter(make_batch_loader(ds, s, finish_in_workers=True)))
    assert not raw.ready and raw.images.dtype == torch.uint8 and raw.images.shape == (5, 32, 32, 3)
    late = finish_batch(raw, torch.device("cpu"), augment=True, channels_last=True)
    assert late.images.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(late.images, done.images, atol=1e-6)


def test_unaugmented_batches_equal_the_evaluation_transform(tmp_path):
    ds = _dataset(tmp_path)
    s = EpochBatchSampler(len(ds), 4, shuffle=False)
    batch = next(iter(make_batch_loader(ds, s, finish_in_workers=True)))
    norm = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    ref = torch.stack([norm(_reference(tmp_path / f"{i}.png", 32)) for i in range(4)])
    assert batch.indices.tolist() == [0, 1, 2, 3]
    assert torch.allclose(batch.images, ref, atol=1e-5)
    assert isinstance(batch, Batch) and torch.equal(batch.targets, torch.tensor([0.0, 1.0, 0.0, 1.0]))


def test_worker_side_augmentation_gives_the_device_side_result_in_uint8(tmp_path):
    aug = AugmentConfig(hflip=0.5, rotation=10, color_jitter=0.3, jpeg_prob=0.5, blur_prob=0.5)
    device_side = _dataset(tmp_path, augment=aug)
    worker_side = ImageDataset(_frame(), tmp_path, 32, aug, augment_in_worker=True)
    s = EpochBatchSampler(len(device_side), 5, seed=4)
    s.set_epoch(2)
    late = finish_batch(next(iter(make_batch_loader(device_side, s))), torch.device("cpu"), augment=True)
    s.set_epoch(2)
    early = next(iter(make_batch_loader(worker_side, s, finish_in_workers=True)))
    assert torch.equal(early.indices, late.indices)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    diff = ((early.images - late.images) * std * 255).abs()[..., 4:-4, 4:-4]  # in grey levels, away from the corners
    assert diff.mean() < 0.6 and diff.max() < 4
    assert not torch.equal(
        early.images,
        finish_batch(next(iter(make_batch_loader(_dataset(tmp_path), s))), torch.device("cpu"), False).images,
    )


def test_decoded_cache_holds_exactly_the_decoded_pixels_and_is_reused(tmp_path):
    from deepfake.training.loading import DecodedCache

    for i in range(5):
        _photo(90, i).save(tmp_path / f"{i}.jpg", quality=85)
    paths = [tmp_path / f"{i}.jpg" for i in range(5)]
    cache = DecodedCache.build(paths, 40, tmp_path / "cache", show=False)
    assert cache.file.stat().st_size == 5 * 40 * 40 * 3
    for i, p in enumerate(paths):
        assert np.array_equal(cache[i], load_input(p, 40))
    stamp = cache.file.stat().st_mtime_ns
    assert (
        DecodedCache.build(paths, 40, tmp_path / "cache", show=False).file.stat().st_mtime_ns == stamp
    )  # found, not rebuilt
    _photo(90, 9).save(paths[2], quality=85)  # a changed file gives another cache
    assert DecodedCache.build(paths, 40, tmp_path / "cache", show=False).file != cache.file
    frame = pd.DataFrame({"path": [f"{i}.jpg" for i in range(5)], "target": [0, 1, 0, 1, 0]})
    aug = AugmentConfig(jpeg_prob=0.5, blur_prob=0.5)
    cached = ImageDataset(
        frame,
        tmp_path,
        40,
        aug,
        augment_in_worker=True,
        cache=DecodedCache.build(paths, 40, tmp_path / "cache", show=False),
    )
    plain = ImageDataset(frame, tmp_path, 40, aug, augment_in_worker=True)
    s = EpochBatchSampler(5, 5, seed=1)
    s.set_epoch(1)
    a, b = (
        next(iter(make_batch_loader(ds, s, num_workers=w, finish_in_workers=True)))
        for ds, w in ((cached, 2), (plain, 0))
    )
    assert torch.allclose(a.images, b.images, atol=1e-6)  # workers map the cache file themselves
    with pytest.raises(ValueError, match="build it from the same frame"):
        ImageDataset(frame.iloc[:3], tmp_path, 40, cache=cache)
