"""The demo widget driven as a browser drives it: the FileUpload's state is set from front-end JSON."""

import io
import shutil

import numpy as np
import pytest
from PIL import Image
from test_predict import face_contract, write_checkpoint, write_video

from deepfake.core import paths
from deepfake.data.synth import SynthConfig, make_image
from deepfake.inference.predict import PredictConfig, Predictor, clear_cache
from deepfake.inference.widgets import (
    ACCEPT,
    DemoConfig,
    DemoModel,
    DemoWidget,
    choose_model,
    draw_box,
    limit_note,
    load_predictor,
)
from deepfake.metrics.calibration import CalibrationMismatchError, checkpoint_record, save_calibration


@pytest.fixture(scope="module")
def predictor(tiny_dataset, tmp_path_factory):
    files = sorted(tiny_dataset.rglob("*.jpg"))
    ckpt = write_checkpoint(tmp_path_factory.mktemp("wckpt") / "best.pt", files)
    return Predictor(ckpt, "cpu", PredictConfig(calibration_file="", video_frames=4))


@pytest.fixture()
def image(tiny_dataset):
    return sorted((tiny_dataset / "fake").glob("*.jpg"))[0]


def upload(widget: DemoWidget, name: str, data: bytes, mime: str = "image/jpeg") -> None:
    """What the front end sends when a file is chosen: the JSON state the comm message carries."""
    widget.upload.set_state(
        {
            "value": [
                {
                    "name": name,
                    "type": mime,
                    "size": len(data),
                    "content": memoryview(data),
                    "last_modified": 1_700_000_000_000,
                }
            ]
        }
    )


def test_image_upload_shows_verdict_bar_face_and_gradcam(predictor, image):
    w = DemoWidget(predictor)
    upload(w, image.name, image.read_bytes())
    shown = w.shown()
    want = predictor.predict(image)
    assert shown["label"] == want.label and shown["probability"] == pytest.approx(want.probability, abs=1e-3)
    assert shown["bar"] == pytest.approx(want.probability, abs=1e-6)
    assert shown["verdict"].startswith(want.label.upper()) and "threshold 0.500" in shown["verdict"]
    assert "whole image scored" in shown["detail"] and "message" not in shown
    assert shown["input"].shape == (48, 48, 3)
    assert has_colour_bar(shown["gradcam"])  # the overlay, with the bar that reads its colours
    assert "frame-plot" not in shown


def has_colour_bar(rgb: np.ndarray) -> bool:
    """Whether some column of the image's right third runs from red (top) to blue (bottom) through green:
    the Grad-CAM colour bar (JET)."""
    img = rgb.astype(int)
    h, w = img.shape[:2]
    for x in range(2 * w // 3, w):
        r, g, b = img[:, x, 0], img[:, x, 1], img[:, x, 2]
        red = np.nonzero((r > 150) & (b < 60))[0]
        blue = np.nonzero((b > 150) & (r < 60))[0]
        green = np.nonzero((g > 150) & (r < 200) & (b < 200))[0]
        if len(red) > h // 20 and len(blue) > h // 20 and len(green):
            if red.mean() < green.mean() < blue.mean() and blue.max() - red.min() > h // 2:
                return True
    return False


def test_has_colour_bar_needs_a_bar():
    plain = np.full((100, 120, 3), 128, np.uint8)
    assert not has_colour_bar(plain)
    bar = plain.copy()
    bar[10:40, 100:110] = (200, 0, 0)
    bar[40:60, 100:110] = (0, 200, 0)
    bar[60:90, 100:110] = (0, 0, 200)
    assert has_colour_bar(bar) and not has_colour_bar(bar[::-1])  # blue on top is not the bar


def test_uploaded_bytes_do_not_stay_in_the_widget_state(predictor, image):
    w = DemoWidget(predictor)
    upload(w, image.name, image.read_bytes())
    assert w.upload.value == () and w.upload.get_state()["value"] == []
    assert "label" in w.shown()
    w.button.click()  # predict again from the kept copy: same verdict
    assert w.shown()["label"] == predictor.predict(image).label


def test_predict_button_when_not_predicting_on_upload(predictor, image):
    w = DemoWidget(predictor, DemoConfig(auto_predict=False))
    w.button.click()
    assert "upload an image or a video first" in w.shown()["message"]
    upload(w, image.name, image.read_bytes())
    assert "press Predict" in w.shown()["status"] and "label" not in w.shown()
    w.button.click()
    assert w.shown()["label"] in ("real", "fake")


def _noise_png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "name, data, mime, message",
    [
        ("notes.txt", b"hello, not a picture", "text/plain", "Not a readable image or video"),
        ("empty.jpg", b"", "image/jpeg", "empty"),
        ("clip.mp4", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64, "video/mp4", "could not be opened as a video"),
    ],
)
def test_bad_uploads_show_a_message_and_no_result(predictor, name, data, mime, message):
    w = DemoWidget(predictor)
    upload(w, name, data, mime)
    shown = w.shown()
    assert message in shown["message"] and "label" not in shown and w.result.children == ()


def test_no_face_in_a_photo_for_a_face_model_is_a_message(tiny_dataset, tmp_path):
    files = sorted(tiny_dataset.rglob("*.jpg"))
    ckpt = write_checkpoint(tmp_path / "face.pt", files, preprocessing=face_contract())
    w = DemoWidget(Predictor(ckpt, "cpu", PredictConfig(calibration_file="")))
    upload(w, "noise.png", _noise_png(400), "image/png")
    shown = w.shown()
    assert "No face found in noise.png" in shown["message"] and "largest face (dlib_cnn)" in shown["message"]
    assert "label" not in shown and w.result.children == ()


def test_the_upload_button_offers_every_type_the_package_reads(predictor):
    from deepfake.data.media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

    assert set(ACCEPT.split(",")) == set(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
    assert DemoWidget(predictor).upload.accept == ACCEPT and ".tif" in ACCEPT and ".webm" in ACCEPT


def test_truncated_and_too_large_uploads(predictor, image):
    w = DemoWidget(predictor, DemoConfig(max_upload_mb=0.001))
    upload(w, "big.jpg", image.read_bytes() + b"\x00" * 2000)
    assert w.shown()["message"].startswith("Too large") and "big.jpg is 0.0 MB" in w.shown()["message"]
    assert "python -m deepfake predict big.jpg" in w.shown()["message"]
    w = DemoWidget(predictor)
    upload(w, "cut.jpg", image.read_bytes()[:150])
    assert "cut.jpg" in w.shown()["message"] and "label" not in w.shown()


def test_the_size_limit_is_shown_and_an_oversized_upload_replaces_the_last_verdict(predictor, image):
    w = DemoWidget(predictor, DemoConfig(max_upload_mb=0.5))
    shown = w.shown()
    assert shown["limit"] == "files up to 0.5 MB" and "message" not in shown
    note = shown["limit_note"]
    assert note == limit_note(0.5) and note.startswith("Files over 0.5 MB are refused with a message.")
    assert "10 MiB" in note and "never reaches Python" in note and "websocket_max_message_size" in note
    assert "python -m deepfake predict FILE" in note
    upload(w, image.name, image.read_bytes())
    assert "label" in w.shown()
    upload(w, "huge.png", b"\x89PNG" + bytes(600_000))  # 0.6 MB: the previous verdict must not stay on screen
    shown = w.shown()
    assert shown["message"].startswith("Too large: huge.png is 0.6 MB") and "up to 0.5 MB" in shown["message"]
    assert "label" not in shown and "gradcam" not in shown and w.result.children == ()


def test_a_new_upload_clears_the_last_verdict_before_predict_is_pressed(predictor, image):
    w = DemoWidget(predictor, DemoConfig(auto_predict=False))
    upload(w, image.name, image.read_bytes())
    w.button.click()
    assert "label" in w.shown()
    upload(w, "second.jpg", image.read_bytes())
    assert "label" not in w.shown() and "second.jpg uploaded; press Predict" in w.shown()["status"]


def test_a_file_the_browser_could_not_read_is_a_message(predictor, image):
    w = DemoWidget(predictor)
    upload(w, image.name, image.read_bytes())
    w.upload.set_state({"error": "NotReadableError"})  # what the front end sets when its FileReader fails
    shown = w.shown()
    assert "could not read the chosen file (NotReadableError)" in shown["message"] and "label" not in shown


def test_an_unexpected_failure_is_reported_not_raised(predictor, image, monkeypatch):
    w = DemoWidget(predictor)

    def boom(*a, **k):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(predictor, "explain", boom)
    upload(w, image.name, image.read_bytes())
    assert "Unexpected error while scoring" in w.shown()["message"] and "out of memory" in w.shown()["message"]


def test_video_upload_shows_the_frame_plot_and_the_video_verdict(predictor, tiny_dataset, tmp_path):
    frames = [
        np.asarray(Image.open(p).convert("RGB").resize((64, 64))) for p in sorted(tiny_dataset.rglob("*.jpg"))[:12]
    ]
    video = write_video(tmp_path / "clip.avi", frames)
    w = DemoWidget(predictor)
    upload(w, "clip.avi", video.read_bytes(), "video/x-msvideo")
    shown = w.shown()
    want = predictor.predict_video(video)
    assert shown["label"] == want.label and shown["probability"] == pytest.approx(want.probability, abs=1e-3)
    assert "mean of 4 of 12 frames" in shown["detail"]
    top = max(want.frames, key=lambda f: f.probability).frame
    assert f"most suspicious frame {top}" in shown["detail"]
    assert shown["frame-plot"].shape[1] > 300 and "gradcam" in shown and "input" in shown


def test_draw_box_scales_the_box_to_the_display():
    rgb = np.zeros((100, 200, 3), np.uint8)
    out = draw_box(
        rgb, (40, 20, 60, 60), scale=2.0, colour="#ff0000", max_side=100
    )  # decoded at 1/2, shown at 1/2 of that
    assert out.shape == (50, 100, 3)
    ys, xs = np.nonzero(out[:, :, 0])
    got = np.array([xs.min(), ys.min(), xs.max(), ys.max()])
    assert np.abs(got - [10, 5, 25, 20]).max() <= 1  # box corners / 4, give or take the 2 px line width


# -- which model the demo loads, and the line that says so -------------------------------------


@pytest.fixture()
def project(tmp_path, tiny_dataset):
    """A pipeline layout (models/best.pt, reports/eval/calibration.json) and a quick one, both empty."""
    trained = paths.Layout(tmp_path / "raw", tmp_path / "faces", tmp_path / "models", tmp_path / "reports", tmp_path)
    quick = paths.Layout(*(tmp_path / "quick" / d for d in ("raw", "faces", "models", "reports", "cross")))
    return trained, quick, sorted(tiny_dataset.rglob("*.jpg"))


def _train(layout: paths.Layout, files, hashed: bool = True, seed: int = 0, epoch: int = 7, auc: float = 0.8125):
    """A checkpoint with a recorded epoch and validation AUC, and its calibration file."""
    import torch

    layout.models.mkdir(parents=True, exist_ok=True)
    ckpt = write_checkpoint(layout.checkpoint, files, seed=seed)
    state = torch.load(ckpt, weights_only=True)
    torch.save({**state, "epoch": epoch, "val_auc": auc}, ckpt)
    extra = checkpoint_record(ckpt) if hashed else {"arch": "resnet18"}
    save_calibration(layout.calibration, 1.75, 0.4125, "max balanced accuracy on the validation split", **extra)
    return ckpt


def test_auto_picks_the_trained_model_when_it_exists_else_the_quick_one(project):
    trained, quick, files = project
    first = choose_model("auto", trained, quick, testing=False)
    assert first.kind == "quick" and first.checkpoint == quick.checkpoint and first.calibration == quick.calibration
    assert "does not exist yet (make repro trains it)" in first.reason and first.data_dir == quick.raw
    _train(trained, files)
    chosen = choose_model("auto", trained, quick, testing=False)
    assert (chosen.kind, chosen.checkpoint, chosen.calibration) == ("trained", trained.checkpoint, trained.calibration)
    assert chosen.data_dir == trained.raw and "trained by make repro" in chosen.reason
    tested = choose_model("auto", trained, quick, testing=True)  # a test run: always the quick model
    assert tested.kind == "quick" and tested.checkpoint == quick.checkpoint and "test run" in tested.reason
    assert choose_model("quick", trained, quick, testing=False).checkpoint == quick.checkpoint
    assert choose_model("trained", trained, quick, testing=True).checkpoint == trained.checkpoint


def test_explicit_choices_and_their_errors(project, tmp_path):
    trained, quick, files = project
    with pytest.raises(FileNotFoundError, match="make repro"):
        choose_model("trained", trained, quick)
    with pytest.raises(FileNotFoundError, match="neither one of"):
        choose_model("elsewhere/model.pt", trained, quick)
    _train(trained, files)
    copy = tmp_path / "run2" / "models" / "best.pt"
    copy.parent.mkdir(parents=True)
    shutil.copy(trained.checkpoint, copy)
    given = choose_model(str(copy), trained, quick)
    assert given.kind == "file" and given.checkpoint == copy
    assert given.calibration == tmp_path / "run2" / "reports" / "eval" / "calibration.json"  # its layout's
    assert given.calibration_file() is None  # which does not exist: none applies
    assert choose_model("trained", trained, quick, calibration_file="none").calibration is None
    mine = choose_model(str(copy), trained, quick, calibration_file=str(trained.calibration))
    assert mine.calibration_file() == trained.calibration
    with pytest.raises(FileNotFoundError, match="calibration_file"):
        choose_model("trained", trained, quick, calibration_file=str(tmp_path / "absent.json"))


def test_the_model_line_names_checkpoint_epoch_auc_and_a_verified_calibration(project):
    trained, quick, files = project
    _train(trained, files)
    choice = choose_model("auto", trained, quick, testing=False)
    clear_cache()
    w = DemoWidget(load_predictor(choice, "cpu"), model=choice)
    line = w.shown()["model"]
    assert f"Model {trained.checkpoint}: resnet18, epoch 7, validation AUC 0.812 (trained by make repro" in line
    assert f"Calibration {trained.calibration}: temperature 1.75, threshold 0.412" in line
    assert "fitted for this checkpoint" in line and "deepfake-warning" not in w.model.value
    assert w.predictor.calibration.temperature == 1.75  # and it is what scores are made with
    clear_cache()


def test_a_calibration_of_another_checkpoint_is_refused_by_the_demo(project):
    trained, quick, files = project
    _train(trained, files)
    _train(quick, files, seed=1)  # another model and its own calibration
    wrong = choose_model("quick", trained, quick, calibration_file=str(trained.calibration))
    clear_cache()
    with pytest.raises(CalibrationMismatchError, match="dvc repro evaluate") as err:
        load_predictor(wrong, "cpu")
    assert str(trained.calibration) in str(err.value) and str(quick.checkpoint) in str(err.value)
    with pytest.raises(CalibrationMismatchError):  # the predictor itself refuses it too (predict, info, cross)
        Predictor(quick.checkpoint, "cpu", PredictConfig(calibration_file=str(trained.calibration)))
    clear_cache()


def test_an_unverifiable_calibration_is_a_visible_warning(project, caplog):
    trained, quick, files = project
    _train(trained, files, hashed=False)
    choice = choose_model("trained", trained, quick)
    clear_cache()
    with caplog.at_level("WARNING", logger="deepfake.metrics.calibration"):
        w = DemoWidget(load_predictor(choice, "cpu"), model=choice)
    assert "cannot be verified" in caplog.text
    assert "not verified: the file records no checkpoint hash" in w.shown()["model"]
    assert "deepfake-warning" in w.model.value and w.predictor.calibration.threshold == 0.4125
    clear_cache()


def test_without_calibration_the_line_says_none_applies(predictor, project):
    assert (
        "Calibration none applies (temperature 1, threshold 0.5): no calibration file"
        in (DemoWidget(predictor).shown()["model"])
    )
    trained, quick, files = project
    _train(trained, files)
    trained.calibration.unlink()
    choice = choose_model("trained", trained, quick)
    clear_cache()
    line = DemoWidget(load_predictor(choice, "cpu"), model=choice).shown()["model"]
    assert f"none applies (temperature 1, threshold 0.5): {trained.calibration} does not exist" in line
    clear_cache()


def test_the_example_image_comes_from_the_models_dataset_or_is_rendered(tmp_path, tiny_dataset):
    here = DemoModel("trained", tmp_path / "best.pt", None, tiny_dataset, "")
    data, name = here.sample()
    first = sorted((tiny_dataset / "fake").glob("id*.jpg"))[0]
    assert (data, name) == (first.read_bytes(), first.name)
    data, name = DemoModel("trained", tmp_path / "best.pt", None, tmp_path / "absent", "").sample()
    assert name == "id00000_00.jpg" and data == make_image(SynthConfig(), 0, 0, True)[0]  # the default dataset's
