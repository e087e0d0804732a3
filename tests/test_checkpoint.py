"""Checkpoints are written atomically, read weights-only, and refused with a message naming the file."""

import pickle

import pytest
import torch

from deepfake.data.inputs import Preprocessing, whole_image
from deepfake.models.architectures import build_model
from deepfake.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    preprocessing_of,
    read_checkpoint,
    save_checkpoint,
)


def _valid(path, **extra):
    model, _ = build_model("dilated_cnn", weights="none")
    return save_checkpoint(path, model=model.state_dict(), arch="dilated_cnn", image_size=32, **extra)


def test_round_trip_with_its_preprocessing_contract(tmp_path):
    prep = Preprocessing(
        crop="face", detector="haar", margin=1.3, no_face="skip", crop_size=64, input_size=32, frames_per_video=8
    )
    path = _valid(tmp_path / "best.pt", preprocessing=prep.to_dict())
    model, ckpt = load_checkpoint(path)
    assert not model.training and ckpt["arch"] == "dilated_cnn"
    assert preprocessing_of(ckpt, path) == prep
    assert not list(tmp_path.glob(".best.pt.*.tmp"))  # the temporary file was renamed


def test_an_old_checkpoint_without_a_contract_is_taken_as_whole_images(tmp_path, caplog):
    _, ckpt = load_checkpoint(_valid(tmp_path / "old.pt"))
    with caplog.at_level("WARNING", logger="deepfake.models.checkpoint"):
        assert preprocessing_of(ckpt, "old.pt") == whole_image(32)
    assert "records no preprocessing contract" in caplog.text


def test_faults_name_the_file_and_never_suggest_unsafe_loading(tmp_path):
    with pytest.raises(FileNotFoundError, match="none.pt does not exist; train a model first"):
        read_checkpoint(tmp_path / "none.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(
        CheckpointError, match=r"other.pt is not a deepfake checkpoint: it has no \['model', 'arch', 'image_size'\]"
    ):
        read_checkpoint(tmp_path / "other.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="list.pt holds a list"):
        read_checkpoint(tmp_path / "list.pt")
    good = _valid(tmp_path / "good.pt")
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cut.pt is not a readable checkpoint") as e:
        read_checkpoint(tmp_path / "cut.pt")
    assert "weights_only=False" not in str(e.value)
    model, _ = build_model("resnet18", weights="none")
    torch.save({"model": model.state_dict(), "arch": "dilated_cnn", "image_size": 32}, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="mismatch.pt: its weights do not fit a dilated_cnn"):
        load_checkpoint(tmp_path / "mismatch.pt")
    torch.save(
        {"model": {}, "arch": "resnet18", "image_size": 32, "preprocessing": {"crop": "blob"}}, tmp_path / "badprep.pt"
    )
    with pytest.raises(CheckpointError, match="preprocessing record"):
        preprocessing_of(read_checkpoint(tmp_path / "badprep.pt"), "badprep.pt")


def test_a_timm_checkpoint_loads_and_one_whose_backbone_timm_lacks_is_named(tmp_path, capsys):
    from deepfake.__main__ import main
    from deepfake.models.architectures import input_config

    torch.manual_seed(0)
    model, _ = build_model("test_resnet", weights="none")
    backbone = input_config("test_resnet")
    path = save_checkpoint(tmp_path / "timm.pt", model=model.state_dict(), arch="test_resnet", image_size=32)
    loaded, ckpt = load_checkpoint(path)
    assert torch.equal(loaded.conv1[0].weight, model.conv1[0].weight) and ckpt["arch"] == "test_resnet"
    gone = save_checkpoint(
        tmp_path / "gone.pt",
        model=model.state_dict(),
        arch="resnet_of_the_future",
        image_size=32,
        backbone={**backbone, "version": "99.0"},
    )
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(gone)
    msg = str(e.value)
    assert msg.startswith(f"{gone}: its architecture cannot be built here: unknown arch 'resnet_of_the_future'")
    assert "trained with timm 99.0" in msg and "pip install 'timm==99.0'" in msg
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (64, 64), "gray").save(image)
    assert main(["predict", str(image), "--checkpoint", str(gone), "--calibration", ""]) == 2
    assert "gone.pt: its architecture cannot be built here" in capsys.readouterr().err


class _Payload:
    def __reduce__(self):
        return (open, ("/tmp/deepfake-pwned-marker", "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the file is a plain pickle, as an attacker writes it
def test_a_pickle_with_code_is_refused_without_running_it(tmp_path):
    import os

    marker = "/tmp/deepfake-pwned-marker"
    if os.path.exists(marker):
        os.unlink(marker)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": _Payload(), "arch": "resnet18", "image_size": 32}, f)
    with pytest.raises(CheckpointError, match="evil.pt was refused: it holds objects other than tensors") as e:
        read_checkpoint(path)
    assert not os.path.exists(marker) and "weights_only=False" not in str(e.value)


def test_the_same_payload_saves_to_the_same_bytes(tmp_path):
    """The archive inside a checkpoint is not named after the temporary file: runs give identical files."""
    payload = {"model": torch.nn.Linear(3, 2).state_dict(), "epoch": 1}
    a = save_checkpoint(tmp_path / "a" / "best.pt", **payload)
    b = save_checkpoint(tmp_path / "b" / "best.pt", **payload)
    assert a.read_bytes() == b.read_bytes()
