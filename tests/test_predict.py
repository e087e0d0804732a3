import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from deepfake.__main__ import main
from deepfake.data import faces
from deepfake.data.detect import FaceBox
from deepfake.data.faces import crop_face
from deepfake.data.inputs import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, whole_image
from deepfake.data.video import read_video_frames
from deepfake.inference import predict as P
from deepfake.metrics.calibration import Calibration
from deepfake.models.architectures import build_model
from deepfake.models.checkpoint import load_checkpoint

SIZE = 64
SHARED = Path(__file__).resolve().parents[2] / "shared" / "real-faces" / "yonsei-rffd"


def reference_transform(image_size: int):
    """torchvision's ImageNet evaluation transform (whole image), independent of the package's own code."""
    return T.Compose(
        [T.Resize((image_size, image_size), antialias=True), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )


def load_pil(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def face_contract(image_size: int = SIZE) -> Preprocessing:
    """A contract of training crops made around detected faces."""
    return Preprocessing(
        crop="face", detector="dlib_cnn", margin=1.3, no_face="skip", crop_size=image_size, input_size=image_size
    )


def write_checkpoint(
    path: Path, images: list[Path], image_size: int = SIZE, seed: int = 0, preprocessing: Preprocessing | None = None
) -> Path:
    """A ResNet18 checkpoint (training's format) with seeded random weights.

    The head is rescaled so that the logits of ``images`` have mean 0 and standard deviation 2:
    both labels occur and calibration and thresholds matter. Its contract is ``preprocessing``
    (default: whole images resized to ``image_size``).
    """
    torch.manual_seed(seed)
    model, used = build_model("resnet18", weights="none")
    model.eval()
    tf = reference_transform(image_size)
    x = torch.stack([tf(load_pil(p)) for p in images])  # (N, 3, S, S)
    fc, model.fc = model.fc, torch.nn.Identity()
    with torch.no_grad():
        feats = model(x)  # (N, 512)
        w, mu = fc.weight[0].clone(), feats.mean(0)
        k = float(2.0 / ((feats - mu) @ w).std())
        fc.weight.copy_(k * w[None])
        fc.bias.fill_(float(-(mu @ w) * k))
    model.fc = fc
    prep = preprocessing or whole_image(image_size)
    torch.save(
        {
            "model": model.state_dict(),
            "arch": "resnet18",
            "image_size": image_size,
            "epoch": 1,
            "val_auc": 0.5,
            "weights_used": used,
            "config": {"image_size": image_size},
            "preprocessing": prep.to_dict(),
        },
        path,
    )
    return path


def write_video(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix == ".avi" else "mp4v"))
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), fourcc, fps, (w, h))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_dataset):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt", sorted(tiny_dataset.rglob("*.jpg")))


@pytest.fixture(scope="module")
def predictor(ckpt):
    return P.Predictor(ckpt, "cpu", P.PredictConfig(calibration_file="", workers=2, batch_size=8))


@pytest.fixture(scope="module")
def images(tiny_dataset):
    return sorted((tiny_dataset / "fake").glob("*.jpg"))[:4] + sorted((tiny_dataset / "real").glob("*.jpg"))[:4]


@pytest.fixture(scope="module")
def face_ckpt(tmp_path_factory, tiny_dataset):
    return write_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "face.pt", sorted(tiny_dataset.rglob("*.jpg")), preprocessing=face_contract()
    )


def reference_probability(ckpt_path: Path, image: Path) -> float:
    """An independent reference: PIL, torchvision's transforms, the eager model, sigmoid."""
    model, meta = load_checkpoint(ckpt_path)
    x = reference_transform(meta["image_size"])(load_pil(image)).unsqueeze(0)  # (1, 3, S, S)
    with torch.no_grad():
        return float(torch.sigmoid(model(x)).item())


def big_jpeg(src: Path, out: Path, side: int = 600) -> Path:
    Image.open(src).convert("RGB").resize((side, side), Image.BICUBIC).save(out, quality=92)
    return out


def test_exact_path_matches_the_training_transform(ckpt, images, tmp_path):
    exact = P.Predictor(ckpt, "cpu", P.PredictConfig(calibration_file=""))
    odd = tmp_path / "odd.png"  # not square and not the network size: the Resize((S, S)) path
    Image.open(images[0]).convert("RGB").resize((150, 90)).save(odd)
    probs = []
    for img in (images[0], images[5], odd):
        got = exact.predict(img)
        assert got.probability == pytest.approx(reference_probability(ckpt, img), abs=1e-5)
        probs.append(got.probability)
    assert max(probs) - min(probs) > 1e-3  # the images really score differently


def test_every_input_type_gives_the_same_score(predictor, images):
    path = images[1]
    want = predictor.predict(path).probability
    data = path.read_bytes()
    rgb = np.asarray(Image.open(path).convert("RGB"))
    for item in (str(path), data, memoryview(data), Image.open(path), rgb, rgb.astype(np.float32) / 255):
        assert predictor.predict(item).probability == pytest.approx(want, abs=2e-3)
    batch = predictor.predict(list(images))
    singles = [predictor.predict(p).probability for p in images]
    assert [r.source for r in batch] == [str(p) for p in images]
    assert np.allclose([r.probability for r in batch], singles, atol=1e-5)


def test_folder_is_scored_recursively_in_sorted_order(predictor, tiny_dataset):
    results = predictor.predict(tiny_dataset)
    files = sorted(p for p in tiny_dataset.rglob("*.jpg"))
    assert [r.source for r in results] == [str(p) for p in files]
    assert all(isinstance(r, P.Prediction) and 0 <= r.probability <= 1 for r in results)
    assert {r.label for r in results} <= {"real", "fake"}
    r = results[0]
    assert r.box is None and r.image_size == (48, 48) and r.timing_ms["total"] > 0


def test_calibration_file_sets_temperature_and_threshold(ckpt, images, tmp_path):
    cal = tmp_path / "calibration.json"
    cal.write_text(json.dumps({"temperature": 2.0, "threshold": 0.7, "ece_before": 0.1}))
    plain = P.Predictor(ckpt, "cpu", P.PredictConfig(calibration_file=str(tmp_path / "absent.json")))
    calibrated = P.Predictor(ckpt, "cpu", P.PredictConfig(calibration_file=str(cal)))
    assert plain.calibration == Calibration(1.0, 0.5, None)
    for img in images:
        a, b = plain.predict(img), calibrated.predict(img)
        assert b.logit == pytest.approx(a.logit, abs=1e-5)
        assert b.probability == pytest.approx(1 / (1 + np.exp(-a.logit / 2)), abs=1e-6)
        assert b.label == ("fake" if b.probability >= 0.7 else "real")
    cal.write_text('{"temperature": "warm"}')
    with pytest.raises(ValueError, match="calibration.json"):
        Calibration.from_file(cal)


def test_detection_follows_the_checkpoint_contract_and_reports_the_box(face_ckpt, images, tmp_path, monkeypatch):
    photo = big_jpeg(images[3], tmp_path / "photo.jpg", side=512)
    seen, names = [], []

    class FakeDetector:
        def detect(self, rgb, upsample=0):
            seen.append(rgb.shape)
            return [FaceBox(128, 96, 256, 256)]

    def fake_get_detector(name):
        names.append(name)
        return FakeDetector()

    monkeypatch.setattr(faces, "get_detector", fake_get_detector)
    p = P.Predictor(face_ckpt, "cpu", P.PredictConfig(calibration_file=""))
    assert p.preprocessing.crop == "face" and "largest face" in p.describe_preprocessing()
    prep = p.prepare(photo, keep_image=True)
    assert prep.box == (128, 96, 256, 256) and seen[-1] == (512, 512, 3)  # decoded in full, searched in full
    assert np.array_equal(prep.crop, crop_face(prep.rgb, FaceBox(128, 96, 256, 256), SIZE, 1.3))
    pred = p.predict(photo)
    assert pred.box == (128, 96, 256, 256) and pred.image_size == (512, 512)
    assert set(names) == {"dlib_cnn"} == {p.preprocessing.detector}  # the checkpoint's detector, not the default


def test_overriding_the_contract_is_logged(ckpt, face_ckpt, caplog):
    with caplog.at_level("WARNING", logger="deepfake.inference.predict"):
        same = P.Predictor(face_ckpt, "cpu", P.PredictConfig(face="detect", calibration_file=""))
    assert same.preprocessing == same.trained_preprocessing and not caplog.records
    with caplog.at_level("WARNING", logger="deepfake.inference.predict"):
        forced = P.Predictor(ckpt, "cpu", P.PredictConfig(face="detect", calibration_file=""))
    assert forced.preprocessing.crop == "face" and forced.trained_preprocessing.crop == "none"
    assert "trained on none crops" in caplog.text and "scores will differ" in caplog.text


def test_no_face_is_an_error_naming_the_input(face_ckpt, tmp_path):
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (320, 320, 3), dtype=np.uint8)).save(noise)
    p = P.Predictor(face_ckpt, "cpu", P.PredictConfig(calibration_file=""))
    with pytest.raises(P.NoFaceError, match="noise.png"):
        p.predict(noise)
    whole = P.Predictor(face_ckpt, "cpu", P.PredictConfig(face="none", calibration_file=""))
    assert whole.predict(noise).box is None


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared real-face photos are not present")
def test_real_photos_are_cropped_around_the_detected_face(ckpt):
    p = P.Predictor(ckpt, "cpu", P.PredictConfig(face="detect", calibration_file=""))
    files = sorted((SHARED / "real").glob("*.jpg"))[:6]
    results = p.predict_batch(files, on_error="collect")
    boxes = [r.box for r in results if isinstance(r, P.Prediction)]
    assert len(boxes) >= 4
    for x, y, w, h in boxes:  # portraits: a large face in the 600x600 frame (dlib's box may cross its edge)
        assert 150 < w < 600 and 0 <= x + w / 2 <= 600 and 0 <= y + h / 2 <= 600


def test_unreadable_inputs_raise_clear_errors(predictor, images, tmp_path):
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(images[0].read_bytes()[:200])
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    for bad, pattern in (
        (truncated, "truncated.jpg"),
        (text, "notes.jpg"),
        (tmp_path / "missing.png", "missing.png"),
        (b"", "empty"),
        (b"\x00" * 64, "<bytes>"),
    ):
        with pytest.raises(P.UnreadableInputError, match=pattern):
            predictor.predict(bad)
    with pytest.raises(TypeError, match="cannot score a dict"):
        predictor.predict({"a": 1})
    with pytest.raises(P.UnreadableInputError, match="shape"):
        predictor.predict(np.zeros((4, 4, 7), np.uint8))
    tiny = P.Predictor(predictor.checkpoint, "cpu", P.PredictConfig(max_pixels=1000, calibration_file=""))
    with pytest.raises(P.InputTooLargeError, match="too many pixels"):
        tiny.predict(images[0])  # 48x48 = 2304 pixels > 1000


def test_batch_collects_errors_in_place(predictor, images, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    results = predictor.predict_batch([images[0], bad, images[1]], on_error="collect")
    assert isinstance(results[1], P.PredictionError) and "bad.png" in results[1].error
    assert results[0].source == str(images[0]) and results[2].source == str(images[1])
    with pytest.raises(P.UnreadableInputError):
        predictor.predict_batch([images[0], bad])


def _frames(images, n):
    return [np.asarray(Image.open(images[i % len(images)]).convert("RGB").resize((SIZE, SIZE))) for i in range(n)]


@pytest.mark.parametrize("ext", [".mp4", ".avi", ".mov"])
def test_video_frames_are_sampled_evenly_and_averaged(predictor, images, tmp_path, ext):
    video = write_video(tmp_path / f"clip{ext}", _frames(images, 20))
    result = predictor.predict(video)
    assert isinstance(result, P.VideoPrediction) and result.n_frames == 20
    assert predictor.cfg.video_frames is None  # as many as training sampled: the checkpoint's contract
    want = np.unique(np.linspace(0, 19, predictor.preprocessing.frames_per_video).round().astype(int)).tolist()
    assert [f.frame for f in result.frames] == want
    assert result.probability == pytest.approx(np.mean([f.probability for f in result.frames]), abs=1e-9)
    assert result.label == predictor.label(result.probability)
    frames = read_video_frames(video, 4)
    idx, rgb = frames[1]  # frame 6: scoring the decoded frame directly gives the same number
    assert idx == 6 and [f.probability for f in result.frames if f.frame == 6][0] == pytest.approx(
        predictor.predict(rgb).probability, abs=1e-5
    )
    from_bytes = predictor.predict(video.read_bytes(), name=video.name)
    assert isinstance(from_bytes, P.VideoPrediction)
    assert from_bytes.probability == pytest.approx(result.probability, abs=1e-6)


def test_video_without_faces_or_frames_fails_clearly(ckpt, tmp_path):
    p = P.Predictor(ckpt, "cpu", P.PredictConfig(face="detect", calibration_file="", video_frames=3))
    rng = np.random.default_rng(1)
    video = write_video(tmp_path / "noise.mp4", [rng.integers(0, 255, (96, 96, 3), dtype=np.uint8) for _ in range(6)])
    with pytest.raises(P.NoFaceError, match="3 frames sampled from .*noise.mp4"):
        p.predict(video)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    with pytest.raises(P.UnreadableInputError, match="broken.mp4"):
        p.predict(broken)


def test_predictor_is_cached_per_checkpoint_device_and_settings(ckpt, images, tmp_path):
    P.clear_cache()
    a = P.get_predictor(ckpt, "cpu", calibration_file="")
    assert P.get_predictor(ckpt, "cpu", calibration_file="") is a
    assert P.get_predictor(ckpt, "cpu", calibration_file="", face="none") is not a
    sample = list(images)
    other = write_checkpoint(tmp_path / "other.pt", sample, seed=1)
    b = P.get_predictor(other, "cpu", calibration_file="")
    write_checkpoint(other, sample, seed=2)  # retrained in place: a new file is loaded
    os.utime(other, ns=(os.stat(other).st_atime_ns, os.stat(other).st_mtime_ns + 10**9))
    c = P.get_predictor(other, "cpu", calibration_file="")
    assert c is not b and not torch.equal(c.model.fc.weight, b.model.fc.weight)
    P.clear_cache()


@pytest.mark.parametrize("backend, tol", [("jit", 1e-3), ("int8", 0.25)])
def test_faster_backends_agree_with_the_eager_model(ckpt, tiny_dataset, images, backend, tol):
    eager = P.Predictor(ckpt, "cpu", P.PredictConfig(calibration_file=""))
    calib = (str(tiny_dataset / "real"),) if backend == "int8" else ()
    # int8's own error is measured here, not bounded (int8_max_change=None)
    cfg = P.PredictConfig(calibration_file="", backend=backend, int8_calibration=calib, int8_max_change=None)
    fast = P.Predictor(ckpt, "cpu", cfg)
    assert fast.describe()["backend"] == backend
    a = np.array([r.logit for r in eager.predict(list(images))])
    b = np.array([r.logit for r in fast.predict(list(images))])
    spread = a.max() - a.min()
    assert spread > 0.1
    assert np.abs(a - b).max() < tol * max(1.0, spread)
    assert np.corrcoef(a, b)[0, 1] > 0.95


def test_int8_that_moves_a_calibration_probability_too_far_is_not_served(ckpt, tiny_dataset, caplog):
    """The predictor measures int8 against the exact model on its calibration images and runs the
    exact model, saying so, when a probability moves by more than ``int8_max_change``."""
    calib = (str(tiny_dataset / "real"),)
    strict = P.Predictor(
        ckpt, "cpu", P.PredictConfig(calibration_file="", backend="int8", int8_calibration=calib, int8_max_change=1e-6)
    )
    info = strict.describe()
    assert info["backend"] == "eager" and "more than the 1e-06 allowed (int8_max_change)" in info["backend_note"]
    image = next((tiny_dataset / "fake").glob("*.jpg"))
    eager = P.Predictor(ckpt, "cpu", P.PredictConfig(calibration_file=""))
    assert strict.predict(image).logit == eager.predict(image).logit
    # this tiny model moves them by 0.15: above the default bound (0.1), below a looser one
    default = P.Predictor(ckpt, "cpu", P.PredictConfig(calibration_file="", backend="int8", int8_calibration=calib))
    assert (
        default.describe()["backend"] == "eager" and "more than the 0.1 allowed" in default.describe()["backend_note"]
    )
    loose = P.PredictConfig(calibration_file="", backend="int8", int8_calibration=calib, int8_max_change=0.5)
    assert P.Predictor(ckpt, "cpu", loose).describe()["backend"] == "int8"
    # the command line: --int8-max-change reaches the predictor
    args = ["predict", str(image), "--checkpoint", str(ckpt), "--calibration", "", "--no-progress", "--json"]
    args += ["--backend", "int8", "--int8-calibration", *calib, "--int8-max-change", "1e-6"]
    P.clear_cache()
    caplog.clear()
    assert main(args) == 0
    assert "running the exact (eager) model" in caplog.text and "1e-06 allowed (int8_max_change)" in caplog.text
    P.clear_cache()


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="face"):
        P.PredictConfig(face="maybe")
    with pytest.raises(ValueError, match="int8_calibration"):
        P.PredictConfig(backend="int8")
    for bad in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match="int8_max_change"):
            P.PredictConfig(int8_max_change=bad)


def test_cli_predict_json_csv_and_errors(ckpt, tiny_dataset, tmp_path, capsys):
    folder = tiny_dataset / "real"
    assert (
        main(["predict", str(folder), "--checkpoint", str(ckpt), "--json", "--calibration", "", "--no-progress"]) == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == len(list(folder.glob("*.jpg"))) and {"label", "probability", "box", "timing_ms"} <= set(rows[0])
    one = sorted(folder.glob("*.jpg"))[0]
    assert main(["predict", str(one), "--checkpoint", str(ckpt), "--csv", "--calibration", ""]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("source,label,probability") and lines[1].startswith(str(one))
    assert float(lines[1].split(",")[2]) == pytest.approx(rows[0]["probability"], abs=1e-5)
    bad = tmp_path / "bad.jpg"
    bad.write_text("no")
    code = main(
        ["predict", str(one), str(bad), str(tmp_path / "absent.jpg"), "--checkpoint", str(ckpt), "--calibration", ""]
    )
    out = capsys.readouterr()
    assert code == 1 and "bad.jpg" in out.err and "absent.jpg does not exist" in out.err
    assert str(one) in out.out and "1 unreadable" in out.out
    assert main(["predict", str(one), "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "cannot load the model" in capsys.readouterr().err


def test_cli_info_reports_whether_the_model_loads(ckpt, tmp_path, capsys):
    assert main(["info", "--checkpoint", str(ckpt), "--calibration", str(tmp_path / "none.json"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"].startswith("loads: resnet18, 64x64") and info["torch"] == torch.__version__
    assert main(["info", "--checkpoint", str(tmp_path / "absent.pt")]) == 1
    assert "absent" in capsys.readouterr().out
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    assert main(["info", "--checkpoint", str(broken)]) == 1
    assert "does not load" in capsys.readouterr().out


def test_cli_info_checks_the_calibration_against_the_checkpoint(ckpt, images, tmp_path, capsys):
    from deepfake.metrics.calibration import checkpoint_record, save_calibration

    mine = save_calibration(tmp_path / "mine.json", 1.5, 0.4, "fixed", **checkpoint_record(ckpt))
    assert main(["info", "--checkpoint", str(ckpt), "--calibration", str(mine), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (
        info["calibration"] == f"{mine}: temperature 1.5, threshold 0.4, fitted for this checkpoint (SHA-256 matches)"
    )
    other = write_checkpoint(tmp_path / "other.pt", list(images), seed=1)
    assert main(["info", "--checkpoint", str(other), "--calibration", str(mine), "--json"]) == 1
    info = json.loads(capsys.readouterr().out)
    assert info["model"].startswith("loads: resnet18")  # the model is fine; its calibration is not
    assert info["calibration"].startswith(f"refused: {mine} was fitted for another checkpoint")
    assert str(other) in info["calibration"] and "dvc repro evaluate" in info["calibration"]
    old = save_calibration(tmp_path / "old.json", 1.5, 0.4, "fixed")  # written before hashes were recorded
    assert main(["info", "--checkpoint", str(ckpt), "--calibration", str(old), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert "not verified: it records no checkpoint hash" in info["calibration"]
