"""The demo widget driven as a browser drives it: the FileUpload's state is set from front-end JSON."""

import io

import numpy as np
import pytest
from PIL import Image
from test_predict import face_contract, write_checkpoint, write_video

from deepfake.predict import PredictConfig, Predictor
from deepfake.widgets import ACCEPT, DemoConfig, DemoWidget, draw_box


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
    assert shown["gradcam"].shape == (64, 64, 3)
    assert not np.array_equal(shown["gradcam"], predictor.prepare(image).crop)  # the heatmap is blended in
    assert "frame-plot" not in shown


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
    from deepfake.media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

    assert set(ACCEPT.split(",")) == set(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
    assert DemoWidget(predictor).upload.accept == ACCEPT and ".tif" in ACCEPT and ".webm" in ACCEPT


def test_truncated_and_too_large_uploads(predictor, image):
    w = DemoWidget(predictor, DemoConfig(max_upload_mb=0.001))
    upload(w, "big.jpg", image.read_bytes() + b"\x00" * 2000)
    assert w.shown()["message"].startswith("Too large") and "big.jpg is 0.0 MB" in w.shown()["message"]
    w = DemoWidget(predictor)
    upload(w, "cut.jpg", image.read_bytes()[:150])
    assert "cut.jpg" in w.shown()["message"] and "label" not in w.shown()


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
