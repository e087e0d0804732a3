"""The training data path: fast decoding to uint8, seeded per-image augmentation, rank-aware batches.

What makes it fast (``benchmarks/bench_train.py`` measures it against a plain
``ImageFolder`` + PIL-transforms loader):

* Images are read and resized by the preprocessing contract's own functions
  (``deepfake.data.inputs.load_input``): what the network sees in validation is exactly what every
  scoring path gives it.
* Workers hand over ``uint8`` ``(H, W, 3)`` arrays (4x fewer bytes than float tensors to
  collate, pin and copy); flip, rotation, colour jitter and normalisation run once per batch
  on the GPU (``deepfake.training.augment.apply_batch``). When training on a CPU the workers apply
  them instead, as OpenCV uint8 kernels (``apply_image``: a warp and one colour matrix per
  image, no HSV round trip), and normalise in their collate.
* The ``(B, H, W, 3)`` batch becomes a channels-last ``(B, 3, H, W)`` tensor by a permute,
  without a copy.

Batches come from ``EpochBatchSampler``: the sequence of *global* batches of an epoch is a
function of ``(seed, epoch)`` alone, each rank takes its slice of every global batch, and every
image carries its own augmentation seed. One process or N, fresh or resumed, the same images
get the same augmentations in the same optimisation steps.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from ..core.progress import progress
from ..data.inputs import IMAGENET_MEAN, IMAGENET_STD, load_input, normalize, resize_input, to_float
from ..data.media import read_image
from .augment import IDENTITY_PARAMS, AugmentConfig, apply_batch, apply_image, degrade, sample_augment
from .blend import BlendConfig, self_blend, training_items


class _DecodeOnly(Dataset):
    def __init__(self, paths: list[Path], size: int) -> None:
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        return load_input(self.paths[i], self.size)


class DecodedCache:
    """Every image of a list decoded and resized once, in one uint8 file of shape ``(N, S, S, 3)``.

    Decoding a photo costs far more than augmenting it (progressive JPEGs cannot even be
    decoded at reduced scale cheaply); with the cache, every epoch after the building pass
    reads memory-mapped pixels instead. The file is named by a hash of the image side and of
    every file's path, size and modification time, written atomically, and reused by later
    runs (and by every rank under torchrun); delete ``cache_dir`` to reclaim the space
    (``N * S * S * 3`` bytes, e.g. 150 kB per image at 224 px). Pixels are exactly
    ``deepfake.data.inputs.load_input``'s.
    """

    VERSION = 2  # 2: decoded by deepfake.data.inputs.load_input (no reduced-scale JPEG decoding)

    def __init__(self, file: Path, n: int, size: int) -> None:
        self.file, self.n, self.size = Path(file), n, size
        self._mm: np.memmap | None = None

    @classmethod
    def path_for(cls, paths: list[Path], size: int, cache_dir: str | os.PathLike) -> Path:
        """Cache file for these images at this side (changes when any file changes)."""
        h = hashlib.sha256(f"v{cls.VERSION} {size}".encode())
        for p in paths:
            st = p.stat()
            h.update(f"\n{p}\t{st.st_size}\t{st.st_mtime_ns}".encode())
        return Path(cache_dir) / f"decoded-{size}px-{len(paths)}-{h.hexdigest()[:20]}.u8"

    @classmethod
    def build(
        cls, paths: list[Path], size: int, cache_dir: str | os.PathLike, num_workers: int = 0, show: bool = True
    ) -> DecodedCache:
        """Open the cache of ``paths``, decoding them (with ``num_workers`` processes) when it does not exist yet."""
        from ..core.utils import atomic_path

        file = cls.path_for(paths, size, cache_dir)
        n, nbytes = len(paths), len(paths) * size * size * 3
        if not (file.is_file() and file.stat().st_size == nbytes):
            loader = DataLoader(
                _DecodeOnly(paths, size),
                batch_size=64,
                num_workers=num_workers,
                collate_fn=np.stack,
                generator=torch.Generator(),
            )  # its own generator: building leaves torch's global RNG alone
            with atomic_path(file) as tmp:
                mm = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(n, size, size, 3))
                start = 0
                for arr in progress(loader, desc=f"decoding {n} images once", unit="batches", disable=not show):
                    mm[start : start + len(arr)] = arr
                    start += len(arr)
                mm.flush()
                del mm
        return cls(file, n, size)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:
        if self._mm is None:  # opened lazily, in each worker process
            self._mm = np.memmap(self.file, dtype=np.uint8, mode="r", shape=(self.n, self.size, self.size, 3))
        return np.array(self._mm[i])  # (S, S, 3) uint8, a private writable copy

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_mm": None}  # workers map the file themselves, never receive the pixels


class ImageDataset(Dataset):
    """Images listed in a frame (``path`` relative to ``root``, ``target``), as uint8 arrays.

    Items are looked up by ``(index, seed)`` pairs (what ``EpochBatchSampler`` yields) or plain
    indices. An item is ``(image (H, W, 3) uint8, target, index, params (N_PARAMS,))``; with an
    ``augment`` config the image is blurred / re-compressed and ``params`` holds its
    flip / rotation / colour augmentation, drawn from ``numpy.random.default_rng(seed)``, for
    ``apply_batch`` to run on the device. With ``augment_in_worker`` the worker applies it
    itself (``apply_image``, OpenCV on uint8: the fast choice when training on a CPU) and
    ``params`` is the identity. With a ``cache`` (a ``DecodedCache`` of the same paths and
    side) images come from it instead of being decoded. ``perturb`` (uint8 image to uint8
    image, e.g. a ``deepfake.evaluation.robustness.Perturbation``) is applied to the decoded image before
    it is resized to ``image_size``.

    With a ``blend`` config that is on, the items are ``deepfake.training.blend.training_items``: some
    read a real row and make it a self-blended pseudo-fake (target 1), from the seed, before
    the augmentation; ``landmarks`` (one ``(n, 2)`` array or None per row, in the pixels of the
    network-size image) shape its mask.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        root: str | os.PathLike,
        image_size: int,
        augment: AugmentConfig | None = None,
        augment_in_worker: bool = False,
        cache: DecodedCache | None = None,
        perturb: Callable[[np.ndarray], np.ndarray] | None = None,
        blend: BlendConfig | None = None,
        landmarks: list[np.ndarray | None] | None = None,
    ) -> None:
        self.paths = [Path(root) / p for p in frame["path"]]
        self.targets = frame["target"].to_numpy(dtype=np.float32, copy=True)  # (N,) of the rows
        self.blend = blend if blend is not None and blend.on else None
        self.rows, self.blended = training_items(self.targets, self.blend or BlendConfig())
        self.item_targets = np.where(self.blended, 1.0, self.targets[self.rows]).astype(np.float32)  # (items,)
        self.landmarks = landmarks if landmarks is not None else [None] * len(self.paths)
        self.image_size = image_size
        self.augment = augment
        self.augment_in_worker = augment_in_worker
        if cache is not None and (len(cache) != len(self.paths) or cache.size != image_size):
            raise ValueError(
                f"decoded cache {cache.file} holds {len(cache)} images at {cache.size} px, "
                f"the dataset {len(self.paths)} at {image_size} px; build it from the same frame"
            )
        if cache is not None and perturb is not None:
            raise ValueError("a perturbation needs the decoded images, not a decoded cache")
        self.cache = cache
        self.perturb = perturb

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
        item, seed = key if isinstance(key, tuple) else (key, 0)
        i = int(self.rows[item])
        if self.cache is not None:
            img = self.cache[i]  # (S, S, 3) uint8
        elif self.perturb is not None:
            img = np.array(resize_input(self.perturb(read_image(self.paths[i])), self.image_size))
        else:
            img = load_input(self.paths[i], self.image_size)
        if self.blended[item] and self.blend is not None:
            img = self_blend(img, self.landmarks[i], self.blend, np.random.default_rng([seed, 7]))[0]
        params = IDENTITY_PARAMS
        if self.augment is not None:
            aug = sample_augment(self.augment, np.random.default_rng(seed))
            img, params = degrade(img, aug), aug.params
            if self.augment_in_worker:
                img, params = apply_image(img, params), IDENTITY_PARAMS
        img = np.require(img, requirements=["C", "W"])  # torch wants a writable buffer; copies only when needed
        return torch.from_numpy(img), torch.tensor(self.item_targets[item]), i, torch.from_numpy(params.copy())


@dataclass(frozen=True)
class Batch:
    """One collated batch.

    Attributes:
        images: ``(B, H, W, 3)`` uint8 (``ready`` false) or a normalised ``(B, 3, H, W)`` float32 batch.
        targets: ``(B,)`` float32, 1 = fake.
        indices: ``(B,)`` int64 row numbers in the split frame.
        params: ``(B, N_PARAMS)`` device-side augmentation parameters.
        ready: the images are already augmented and normalised (collated on the CPU).
    """

    images: torch.Tensor
    targets: torch.Tensor
    indices: torch.Tensor
    params: torch.Tensor
    ready: bool = False

    def pin_memory(self) -> Batch:
        return Batch(
            self.images.pin_memory(), self.targets.pin_memory(), self.indices, self.params.pin_memory(), self.ready
        )


class Collate:
    """Stack items into a ``Batch``; with ``finish`` also augment and normalise (CPU training)."""

    def __init__(self, finish: bool = False, augment: bool = False, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        self.finish, self.augment, self.mean, self.std = finish, augment, tuple(mean), tuple(std)

    def __call__(self, items: list) -> Batch:
        images, targets, indices, params = zip(*items)
        batch = Batch(_stack(images), torch.stack(targets), torch.tensor(indices), _stack(params))
        return finish_batch(batch, torch.device("cpu"), self.augment, self.mean, self.std) if self.finish else batch


def _stack(tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """``torch.stack`` through numpy (a single-threaded memcpy: no OpenMP team to wake, which on a
    busy CPU costs more than the copy), into shared memory inside a worker as ``default_collate`` does."""
    first = tensors[0]
    shape = (len(tensors), *first.shape)
    if get_worker_info() is not None:  # the batch crosses to the main process: allocate it shared
        out = first.new(first.untyped_storage()._new_shared(first.element_size() * math.prod(shape))).view(shape)
    else:
        out = torch.empty(shape, dtype=first.dtype)
    np.stack([t.numpy() for t in tensors], out=out.numpy())
    return out


def finish_batch(
    batch: Batch, device: torch.device, augment: bool, mean=IMAGENET_MEAN, std=IMAGENET_STD, channels_last: bool = False
) -> Batch:
    """Move a batch to ``device`` (non-blocking) and augment / normalise it there.

    Returns:
        A ``ready`` batch whose images are ``(B, 3, H, W)`` float32, channels-last when asked.
    """
    if batch.ready:
        x = batch.images.to(device, non_blocking=True)
    else:
        x = to_float(batch.images.to(device, non_blocking=True))  # (B, 3, H, W) in [0, 1]
        if augment:
            x = apply_batch(x, batch.params)  # parameters stay on the CPU: no device sync to decide what to run
        x = normalize(x, mean, std)
    x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return Batch(x, batch.targets.to(device, non_blocking=True), batch.indices, batch.params, ready=True)


class EpochBatchSampler(Sampler):
    """Batches of ``(index, augmentation seed)`` for one rank, reproducible from ``(seed, epoch)``.

    Each epoch draws an order of the ``n`` images (a permutation, or ``n`` class-balanced
    draws with replacement when ``weights`` are given) and one seed per position from
    ``numpy.random.default_rng([seed, epoch])``, cuts it into global batches of
    ``batch_size`` and yields this rank's share of each (``global_batch[rank::world_size]``).
    With ``drop_last`` the final global batch is dropped when it has fewer than
    ``2 * world_size`` images (BatchNorm cannot normalise a batch of one image).

    Args:
        n: number of images.
        batch_size: images per global batch (per optimisation step, all ranks together).
        seed: run seed.
        shuffle: shuffle (training) or keep the frame order (evaluation).
        weights: optional per-image sampling weights (class-balanced sampling).
        rank, world_size: this process's share.
        drop_last: see above.
        max_batches: keep only the first global batches of an epoch (0: all).
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        weights: np.ndarray | None = None,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        max_batches: int = 0,
    ) -> None:
        if n < 1:
            raise ValueError("cannot sample batches from an empty split")
        if batch_size < world_size:
            raise ValueError(
                f"batch_size {batch_size} is smaller than the number of processes {world_size}; each needs at least "
                "one image"
            )
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64) / np.sum(weights)
        self.rank, self.world_size, self.drop_last, self.max_batches = rank, world_size, drop_last, max_batches
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch to draw, and skip its first ``start_batch`` batches (resume)."""
        self.epoch, self.start = epoch, start_batch

    def global_batches(self, world_size: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every global batch of the current epoch as ``(indices, seeds)`` arrays.

        Args:
            world_size: the number of processes ``drop_last`` counts with (default: this sampler's).
        """
        rng = np.random.default_rng([self.seed, self.epoch])
        if not self.shuffle:
            order = np.arange(self.n)
        elif self.weights is None:
            order = rng.permutation(self.n)
        else:
            order = rng.choice(self.n, size=self.n, replace=True, p=self.weights)
        seeds = rng.integers(0, 2**62, size=self.n)
        cuts = range(0, self.n, self.batch_size)
        batches = [(order[i : i + self.batch_size], seeds[i : i + self.batch_size]) for i in cuts]
        if self.drop_last and len(batches) > 1 and len(batches[-1][0]) < 2 * (world_size or self.world_size):
            batches = batches[:-1]
        return batches[: self.max_batches] if self.max_batches else batches

    def steps_per_epoch(self, world_size: int | None = None) -> int:
        """Global batches (optimisation steps) of a whole epoch with ``world_size`` processes (default: this
        sampler's). The same for every world size except where ``drop_last`` keeps the last, small batch for
        one and drops it for the other."""
        return len(self.global_batches(world_size))

    def global_sizes(self) -> list[int]:
        """Images per global batch, from ``start_batch`` on (the loss of a step is averaged over them)."""
        return [len(i) for i, _ in self.global_batches()[self.start :]]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for idx, seeds in self.global_batches()[self.start :]:
            mine = slice(self.rank, None, self.world_size)
            yield [(int(i), int(s)) for i, s in zip(idx[mine], seeds[mine])]

    def __len__(self) -> int:
        full = len(self.global_batches())
        return max(full - self.start, 0)


def class_weights(targets: np.ndarray) -> np.ndarray:
    """Per-image sampling weights that make both classes equally likely."""
    targets = np.asarray(targets).astype(int)
    counts = np.bincount(targets, minlength=2).astype(np.float64)
    if (counts == 0).any():
        raise ValueError(
            f"class-balanced sampling needs both classes; the split has counts {counts.tolist()} (real, fake)"
        )
    return 1.0 / counts[targets]


def make_batch_loader(
    dataset: ImageDataset,
    sampler: EpochBatchSampler,
    num_workers: int = 0,
    pin_memory: bool = False,
    finish_in_workers: bool = False,
    seed: int = 0,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> DataLoader:
    """A DataLoader over ``dataset`` driven by ``sampler``.

    Args:
        finish_in_workers: augment and normalise in the collate function (CPU training), so the
            work happens in the worker processes; otherwise batches stay uint8 until
            ``finish_batch`` runs on the device.
        seed: seeds the loader's own generator (worker base seeds), so creating an iterator never
            draws from torch's global generator (that would change dropout masks on resume).
        mean, std: the model's input normalisation (its preprocessing contract's).
    """
    from ..core.utils import worker_init_fn

    gen = torch.Generator()
    gen.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=Collate(
            finish=finish_in_workers,
            augment=dataset.augment is not None and not dataset.augment_in_worker,
            mean=mean,
            std=std,
        ),
        pin_memory=pin_memory,
        worker_init_fn=worker_init_fn,
        generator=gen,
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
    )
