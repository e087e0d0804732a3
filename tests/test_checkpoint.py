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


def test_face_search_round_trips_and_a_contract_without_it_searches_in_full(tmp_path):
    prep = Preprocessing(
        crop="face",
        detector="dlib_hog",
        margin=1.3,
        no_face="skip",
        crop_size=96,
        input_size=96,
        face_search="adaptive",
    )
    _, ckpt = load_checkpoint(_valid(tmp_path / "new.pt", preprocessing=prep.to_dict()))
    assert preprocessing_of(ckpt).face_search == "adaptive" and preprocessing_of(ckpt) == prep
    old = {k: v for k, v in prep.to_dict().items() if k != "face_search"}  # written before the setting existed
    _, ckpt = load_checkpoint(_valid(tmp_path / "old.pt", preprocessing=old))
    assert preprocessing_of(ckpt).face_search == "full"
    with pytest.raises(CheckpointError, match="face_search must be one of"):
        preprocessing_of({**ckpt, "preprocessing": {**old, "face_search": "fastest"}})


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
