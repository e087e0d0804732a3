"""The training run's settings: ``params.yaml``'s ``train`` section as a typed, validated config.

``TrainConfig`` is recorded inside every checkpoint (``deepfake.training.train``); its
``augment`` and ``blend`` views are what the loader and self-blending take.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.config import section, setting
from ..models.architectures import UnknownArchError, check_arch
from .augment import AugmentConfig
from .blend import MODES as BLEND_MODES
from .blend import BlendConfig

SCHEDULES = ("constant", "cosine", "linear")
OPTIMIZERS = ("adam", "sgd")
CLASS_BALANCE = ("auto", "loss", "sampler", "none")


@dataclass(frozen=True)
@section("train", base_keys=("device", "seed"))
class TrainConfig:
    """Everything that defines a training run (recorded inside every checkpoint).

    Defaults are ``params.yaml``'s ``train`` section (``device`` and ``seed``: ``base``).

    Attributes:
        arch: ``resnet18`` | ``dilated_cnn`` | any timm model name (``efficientnet_b4``,
            ``legacy_xception``...; see ``deepfake.models.architectures``).
        weights: ``auto`` | ``imagenet`` | ``none`` | path to weights (a state dict or checkpoint).
        epochs: passes over the training split (at most; see ``patience``).
        batch_size: images per optimisation step (all processes together under torchrun).
        optimizer: ``adam`` or ``sgd`` (with ``momentum``).
        lr: learning rate (peak, after warm-up).
        momentum: SGD's momentum (unused by Adam).
        weight_decay: weight decay (L2, as both optimizers apply it).
        schedule: ``constant``, ``cosine`` (decay to 0 at the end of the last epoch) or ``linear``
            (constant, then down to 0 over the last quarter of the steps: SBI's), per step.
        warmup_epochs: linear learning-rate warm-up from ~0, in epochs (fractions allowed).
        freeze_backbone_epochs: train only the new head for this many first epochs, backbone
            BatchNorm statistics frozen too; needs pretrained weights (ignored, with a
            warning, when the backbone is randomly initialised).
        patience: stop after this many epochs without a better validation AUC (0: never).
        class_balance: ``auto`` (``loss`` when the train classes differ in size, else ``none``),
            ``loss`` (BCE ``pos_weight`` = real / fake count), ``sampler`` (draw classes equally
            often, with replacement) or ``none``.
        image_size: side of the square network input.
        hflip: horizontal-flip probability.
        rotation: maximum random rotation in degrees.
        color_jitter: ColorJitter strength (brightness, contrast, saturation; hue a quarter).
        jpeg_prob: probability of JPEG re-compression.
        jpeg_quality_min, jpeg_quality_max: re-compression quality range (inclusive).
        blur_prob: probability of Gaussian blur.
        blur_sigma_min, blur_sigma_max: blur standard-deviation range in pixels.
        num_workers: DataLoader worker processes (per process under torchrun).
        decode_cache: decode and resize every image once into ``build/cache/`` (uint8, memory
            mapped) and read it in every epoch: worth it for photos much larger than
            ``image_size`` (see ``deepfake.training.loading.DecodedCache``); pixels are identical.
        device: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda``, ``cuda:1``...
        amp: mixed precision on CUDA (bf16 where supported, else fp16 with a grad scaler).
        cpu_bf16: on a CPU, bf16 autocast and channels-last when the CPU has native bf16
            instructions (AVX512-BF16 or AMX; a warning and float32 otherwise). About 2x
            faster ResNet18 training steps on such CPUs (BENCHMARKS.md); the numerics differ
            from float32, so runs on CPUs with and without it are not comparable bit for bit.
        channels_last: NHWC memory format on CUDA.
        compile_model: ``torch.compile`` the training model.
        sync_bn: under torchrun on CUDA, synchronise BatchNorm statistics across GPUs.
        seed: seed of initialisation, shuffling and augmentation.
        deterministic: ask torch for deterministic kernels.
        max_batches: stop each epoch after this many batches (0: all); for quick checks.
        resume: continue from ``out_dir/last.pt`` when it exists.
        checkpoint_every: also write ``last.pt`` every this many batches (0: at epoch ends only).
        self_blend: ``off`` | ``add`` | ``only``: self-blended pseudo-fakes made from the real
            training crops (``deepfake.training.blend``); ``only`` drops the split's fakes from training.
        blend_share: with ``add``, pseudo-fakes per real training image and epoch.
        blend_ratio_min: lowest blend ratio of a pseudo-fake (the highest is 1).
        min_epochs: epochs always trained before early stopping may stop the run.
    """

    arch: str = setting()  # ARCHS or a timm model name: checked by check_arch
    weights: str = setting()
    epochs: int = setting(min=1)
    batch_size: int = setting(min=1)
    optimizer: str = setting(choices=OPTIMIZERS)
    lr: float = setting(gt=0)
    momentum: float = setting(min=0, lt=1)
    weight_decay: float = setting(min=0)
    schedule: str = setting(choices=SCHEDULES)
    warmup_epochs: float = setting(min=0)
    freeze_backbone_epochs: int = setting(min=0)
    patience: int = setting(min=0)
    class_balance: str = setting(choices=CLASS_BALANCE)
    image_size: int = setting(min=16, max=2048)
    hflip: float = setting(min=0, max=1)
    rotation: float = setting(min=0, max=180)
    color_jitter: float = setting(min=0, max=1)
    jpeg_prob: float = setting(min=0, max=1)
    jpeg_quality_min: int = setting(min=1, max=100)
    jpeg_quality_max: int = setting(min=1, max=100)
    blur_prob: float = setting(min=0, max=1)
    blur_sigma_min: float = setting(gt=0)
    blur_sigma_max: float = setting(gt=0)
    num_workers: int = setting(min=0)
    decode_cache: bool = setting()
    device: str = setting()
    amp: bool = setting()
    cpu_bf16: bool = setting()
    channels_last: bool = setting()
    compile_model: bool = setting()
    sync_bn: bool = setting()
    seed: int = setting(min=0)
    deterministic: bool = setting()
    resume: bool = setting()
    checkpoint_every: int = setting(min=0)
    self_blend: str | bool = setting(choices=(*BLEND_MODES, False))  # YAML reads a bare off as false
    blend_share: float = setting(gt=0, max=1)
    blend_ratio_min: float = setting(gt=0, max=1)
    min_epochs: int = setting(min=1)
    max_batches: int = 0  # not a pipeline setting: quick checks stop each epoch early

    def __post_init__(self) -> None:
        try:
            check_arch(self.arch)
        except UnknownArchError as e:
            raise ValueError(f"train.arch = {e}") from None
        if self.jpeg_quality_min > self.jpeg_quality_max:
            raise ValueError(
                f"train.jpeg_quality_min ({self.jpeg_quality_min}) must not exceed train.jpeg_quality_max "
                f"({self.jpeg_quality_max})"
            )
        if self.blur_sigma_min > self.blur_sigma_max:
            raise ValueError(
                f"train.blur_sigma_min ({self.blur_sigma_min}) must not exceed train.blur_sigma_max "
                f"({self.blur_sigma_max})"
            )
        if self.max_batches < 0:
            raise ValueError(f"max_batches must be >= 0, got {self.max_batches}")
        _ = self.augment  # validates the augmentation ranges

    def blend(self, margin: float = 1.3) -> BlendConfig:
        """The self-blending settings (``margin``: the crops' margin around the face box)."""
        mode = "off" if self.self_blend is False else str(self.self_blend)
        return BlendConfig(mode=mode, share=self.blend_share, ratio_min=self.blend_ratio_min, margin=margin)

    @property
    def augment(self) -> AugmentConfig | None:
        """The training augmentation, or None when every augmentation is switched off."""
        aug = AugmentConfig(
            hflip=self.hflip,
            rotation=self.rotation,
            color_jitter=self.color_jitter,
            jpeg_prob=self.jpeg_prob,
            jpeg_quality=(self.jpeg_quality_min, self.jpeg_quality_max),
            blur_prob=self.blur_prob,
            blur_sigma=(self.blur_sigma_min, self.blur_sigma_max),
        )
        active = aug.hflip or aug.rotation or aug.color_jitter or aug.jpeg_prob or aug.blur_prob
        return aug if active else None
