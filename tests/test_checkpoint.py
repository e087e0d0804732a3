"""Checkpoints are written atomically, read weights-only, and refused with a message naming the file."""

import os
import pickle
import re
import subprocess
import sys

import pytest
import torch

from deepfake.core import paths
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
        CheckpointError,
        match=r"other.pt is not a checkpoint of this package: it has no model, arch, image_size entries \(it holds "
        r"weights\)",
    ):
        read_checkpoint(tmp_path / "other.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="list.pt holds a list"):
        read_checkpoint(tmp_path / "list.pt")
    good = _valid(tmp_path / "good.pt")
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cut.pt is damaged or truncated") as e:
        read_checkpoint(tmp_path / "cut.pt")
    assert "weights_only" not in str(e.value)
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
    with pytest.raises(CheckpointError, match="evil.pt was refused unread: it is a pickle of Python objects") as e:
        read_checkpoint(path)
    assert not os.path.exists(marker) and "weights_only" not in str(e.value)


def test_the_same_payload_saves_to_the_same_bytes(tmp_path):
    """The archive inside a checkpoint is not named after the temporary file: runs give identical files."""
    payload = {"model": torch.nn.Linear(3, 2).state_dict(), "epoch": 1}
    a = save_checkpoint(tmp_path / "a" / "best.pt", **payload)
    b = save_checkpoint(tmp_path / "b" / "best.pt", **payload)
    assert a.read_bytes() == b.read_bytes()


# Every unusable file passed as a checkpoint: one sentence naming it, what is wrong and what to do


def _state_dict(arch):
    return build_model(arch, weights="none")[0].state_dict()


class _Refused:
    """Pickled as a call of ``print``: a plain pickle that weights-only loading refuses."""

    def __reduce__(self):
        return (print, ("this must never run",))


def _jpeg(path):
    from PIL import Image

    Image.new("RGB", (48, 48), (120, 90, 60)).save(path)


def _bad_checkpoints(folder):
    """name -> (path, what its message must say), written into ``folder``."""
    folder.mkdir(exist_ok=True)
    good = _valid(folder / "good.pt", preprocessing=whole_image(32).to_dict())
    prep = {**whole_image(32).to_dict(), "crop": "blob"}
    writers = {
        "empty.pt": (lambda p: p.write_bytes(b""), "is empty (0 bytes), not a checkpoint"),
        "truncated.pt": (lambda p: p.write_bytes(good.read_bytes()[:2000]), "is damaged or truncated"),
        "other_arch.pt": (
            lambda p: torch.save({"model": _state_dict("resnet18"), "arch": "dilated_cnn", "image_size": 32}, p),
            "its weights do not fit a dilated_cnn, the arch it records (52 of the 52 tensors it needs are missing",
        ),
        "unknown_arch.pt": (
            lambda p: torch.save({"model": _state_dict("resnet18"), "arch": "no_such_net", "image_size": 32}, p),
            "its architecture cannot be built here: unknown arch",
        ),
        "state_dict.pt": (lambda p: torch.save(_state_dict("resnet18"), p), "is a bare state dict (122 tensors)"),
        "bad_contract.pt": (
            lambda p: torch.save(
                {"model": _state_dict("dilated_cnn"), "arch": "dilated_cnn", "image_size": 32, "preprocessing": prep}, p
            ),
            "its preprocessing record (how its training crops were made) is invalid: preprocessing crop must be one of",
        ),
        "photo.pt.jpg": (_jpeg, "is an image, not a PyTorch checkpoint"),
        "notes.txt": (
            lambda p: p.write_text("model: resnet18\nepochs: 7\n"),
            "is a text file, not a PyTorch checkpoint",
        ),
        "pickle.pt": (
            lambda p: p.write_bytes(pickle.dumps({"model": _Refused(), "arch": "resnet18", "image_size": 32})),
            "was refused unread: it is a pickle of Python objects",
        ),
    }
    cases = {}
    for name, (write, says) in writers.items():
        write(folder / name)
        cases[name] = (folder / name, says)
    return cases


FIXES = ("dvc repro train", "pass a checkpoint written by deepfake's training", "use a checkpoint of one of these")


def _one_sentence(message, path, says):
    assert str(path) in message and says in message, message
    assert any(fix in message for fix in FIXES), f"no advice in: {message}"
    assert not re.search(r"\b[A-Z]\w*(Error|Exception)\b", message), f"an exception name in: {message}"
    assert "\n" not in message and "weights_only" not in message


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_each_unusable_checkpoint_is_named_with_its_fault_and_the_fix(tmp_path, capsys):
    from deepfake.__main__ import main
    from deepfake.inference.predict import clear_cache, get_predictor

    photo = tmp_path / "photo.jpg"
    _jpeg(photo)
    cases = _bad_checkpoints(tmp_path / "bad")
    for name, (path, says) in cases.items():
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(path)
        _one_sentence(str(e.value), path, says)
        with pytest.raises(CheckpointError) as e:
            get_predictor(path, "cpu", calibration_file="")
        _one_sentence(str(e.value), path, says)
        assert main(["predict", str(photo), "--checkpoint", str(path), "--calibration", ""]) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: cannot load the model: ") and err.count("\n") == 0, err
        _one_sentence(err.removeprefix("error: cannot load the model: "), path, says)
    clear_cache()


def test_a_folder_or_a_missing_path_is_named(tmp_path):
    (tmp_path / "models").mkdir()
    with pytest.raises(CheckpointError, match="models is a folder, not a checkpoint file; pass the checkpoint file"):
        read_checkpoint(tmp_path / "models")
    with pytest.raises(FileNotFoundError, match="absent.pt does not exist; train a model first"):
        load_checkpoint(tmp_path / "absent.pt")


@pytest.mark.slow
def test_the_predict_command_names_each_unusable_checkpoint_without_a_traceback(tmp_path):
    """`python -m deepfake predict --checkpoint BAD photo.jpg`, as a user types it, from the folder of the files."""
    cases = _bad_checkpoints(tmp_path)
    _jpeg(tmp_path / "photo.jpg")
    env = {**os.environ, "PYTHONPATH": str(paths.ROOT)}
    for name, (path, says) in cases.items():
        run = subprocess.run(
            [sys.executable, "-m", "deepfake", "predict", "--checkpoint", name, "photo.jpg", "--device", "cpu"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 2, (name, run.stdout, run.stderr)
        assert "Traceback" not in run.stderr and run.stdout == ""
        assert run.stderr.count("\n") == 1, run.stderr  # one line: the error
        _one_sentence(run.stderr.strip().removeprefix("error: cannot load the model: "), path, says)
