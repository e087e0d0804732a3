import os

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from deepfake.data.split import (  # noqa: E402
    SplitConfig,
    index_dataset,  # noqa: E402
    split_dataset,
    write_splits,
)
from deepfake.data.synth import SynthConfig, generate  # noqa: E402

TINY = SynthConfig(n_identities=24, images_per_identity=1, image_size=48, seed=3, family_size=2, workers=1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A 48-image synthetic dataset (24 identities in 12 groups), generated once per session."""
    return generate(tmp_path_factory.mktemp("tiny") / "raw", TINY, progress=False)


@pytest.fixture(scope="session")
def tiny_splits(tiny_dataset, tmp_path_factory):
    """Split manifests of the tiny dataset."""
    out = tmp_path_factory.mktemp("splits")
    frame = split_dataset(index_dataset(tiny_dataset), SplitConfig(val_frac=0.25, test_frac=0.25))
    write_splits(frame, out)
    return out


@pytest.fixture()
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub cache, so ImageNet weights are 'not downloaded' unless a test writes them."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"
