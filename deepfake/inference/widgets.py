"""Upload-and-predict demo widget (ipywidgets 8): image or video in, verdict and Grad-CAM out.

The result area is built from widgets (HTML, Image, FloatProgress), not from captured output,
so tests can drive the widget from Python and read back exactly what a browser shows. Every
failure is shown as a message in the widget; nothing is raised into the kernel. Uploaded
bytes are dropped from the upload widget as soon as they are read, so they never reach the
saved widget state of a notebook.

Which model the demo loads is chosen by ``choose_model`` (the notebook's ``model`` parameter):
the pipeline's ``models/best.pt`` with its ``calibration.json`` when ``make repro`` has made
them, else the quick one-epoch model of ``build/quick``. The widget shows the choice in a line
above the upload button: checkpoint, epoch, validation AUC and calibration.
"""

from __future__ import annotations

import html
import io
import os
import re
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import cv2
import ipywidgets as W
import numpy as np
from PIL import Image

from ..core import paths
from ..data.media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, kind_of, looks_like_video
from ..data.synth import SynthConfig, make_image
from .gradcam import GradCam, gradcam_figure
from .predict import Predictor, get_predictor
from .prediction import (
    InputError,
    InputTooLargeError,
    NoFaceError,
    Prediction,
    Prepared,
    UnreadableInputError,
    VideoPrediction,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: What the upload button offers: the file types the package reads (``deepfake.data.media``).
ACCEPT = ",".join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
COLOURS = {"fake": "#c0392b", "real": "#1e8449"}


#: What Jupyter carries in one websocket message unless the server raises
#: ``ServerApp.tornado_settings["websocket_max_message_size"]`` (tornado's default, 10 MiB).
WEBSOCKET_LIMIT_BYTES = 10 * 1024 * 1024
#: What the notebook's ``model`` parameter names besides a checkpoint path.
MODEL_CHOICES = ("auto", "trained", "quick")


@dataclass(frozen=True)
class DemoConfig:
    """Widget settings.

    Attributes:
        max_upload_mb: larger uploads are refused with a message; the limit is shown beside the
            upload button. A Jupyter server carries at most 10 MiB per websocket message unless
            its ``tornado_settings`` raise ``websocket_max_message_size``: a larger file never
            reaches the kernel, and nothing in the browser reports it (``limit_note`` explains
            it under the button).
        video_frames: frames sampled from an uploaded video (0: the predictor's setting).
        display_px: side of the displayed images.
        auto_predict: score as soon as a file is uploaded (else on the button).
    """

    max_upload_mb: float = 10.0
    video_frames: int = 0
    display_px: int = 224
    auto_predict: bool = True


# --------------------------------------------------------------------------------------------
# Which model the demo loads
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoModel:
    """The checkpoint and calibration the demo loads, and why.

    Attributes:
        kind: ``trained`` (the pipeline's ``models/best.pt``), ``quick`` (the one-epoch model of
            the quick check, built when missing) or ``file`` (a checkpoint named by path).
        checkpoint: the checkpoint file (a quick one may not exist yet: the notebook builds it).
        calibration: its calibration file, used when it exists; None when none is to be applied.
        data_dir: the dataset the model was trained on (the notebook's example image comes from it).
        reason: why this model, in words.
    """

    kind: str
    checkpoint: Path
    calibration: Path | None
    data_dir: Path
    reason: str

    def calibration_file(self) -> Path | None:
        """The calibration file to apply: ``calibration`` when it exists, else None."""
        return self.calibration if self.calibration is not None and self.calibration.is_file() else None

    def sample(self) -> tuple[bytes, str]:
        """An example fake image and its name: the first rendered fake of ``data_dir``, else the
        default dataset's ``fake/id00000_00.jpg`` rendered afresh."""
        found = sorted((self.data_dir / "fake").glob("id*.jpg"))  # the rendered fakes, not other files there
        if found:
            return found[0].read_bytes(), found[0].name
        data, _ = make_image(SynthConfig(), identity=0, index=0, fake=True)
        return data, "id00000_00.jpg"


def _beside(checkpoint: Path) -> Path:
    """The calibration file of the layout holding ``checkpoint`` (``<root>/models`` -> ``<root>/reports/eval``)."""
    return checkpoint.parent.parent / "reports" / "eval" / "calibration.json"


def choose_model(
    model: str,
    trained: paths.Layout,
    quick: paths.Layout | None = None,
    calibration_file: str = "",
    testing: bool | None = None,
) -> DemoModel:
    """The model the demo loads.

    Args:
        model: ``auto`` (``trained`` when its checkpoint exists, else ``quick``), ``trained``
            (the pipeline's checkpoint; an error when absent), ``quick`` (the one-epoch model of
            the quick check) or the path of a checkpoint.
        trained: the pipeline's layout (``models/best.pt``, ``reports/eval/calibration.json``).
        quick: the quick check's layout (default ``paths.layout(..., quick=True)``).
        calibration_file: ``""``: the chosen layout's ``calibration.json`` (beside a checkpoint
            given by path: ``../reports/eval/calibration.json``) when it exists; ``none``: no
            calibration; else a file, which must exist.
        testing: under a test run ``auto`` means ``quick``, so that a notebook run by nbval gives
            the same outputs whether or not ``make repro`` has run (default: whether pytest runs
            this process, i.e. ``PYTEST_CURRENT_TEST`` is set).
    """
    quick = quick or paths.layout("", "", quick=True)
    testing = "PYTEST_CURRENT_TEST" in os.environ if testing is None else testing
    ckpt = paths.shown(trained.checkpoint)
    quick_model = "the quick one-epoch model on the tiny dataset"
    if model == "auto":
        if testing:
            kind, reason = "quick", f"{quick_model}: under a test run model='auto' always picks it"
        elif trained.checkpoint.is_file():
            kind, reason = "trained", "trained by make repro: model='auto' picks it when it exists"
        else:
            kind, reason = "quick", f"{quick_model}: {ckpt} does not exist yet (make repro trains it)"
    elif model == "trained":
        kind, reason = model, "trained by make repro (model='trained')"
    elif model == "quick":
        kind, reason = model, f"{quick_model} (model='quick')"
    else:
        kind, reason = "file", f"model={model!r}"
    if kind == "trained" and not trained.checkpoint.is_file():
        raise FileNotFoundError(
            f"{ckpt} does not exist: train it with make repro (or dvc repro), or pass model='auto' to use the "
            "quick model until then"
        )
    if kind == "file":
        path = paths.resolve(model)
        if not path.is_file():
            raise FileNotFoundError(
                f"model={model!r} is neither one of {MODEL_CHOICES} nor an existing checkpoint file ({path})"
            )
        where = DemoModel(kind, path, _beside(path), trained.raw, reason)
    else:
        layout = trained if kind == "trained" else quick
        where = DemoModel(kind, layout.checkpoint, layout.calibration, layout.raw, reason)
    if calibration_file == "none":
        return replace(where, calibration=None)
    if calibration_file:
        given = paths.resolve(calibration_file)
        if not given.is_file():
            raise FileNotFoundError(f"calibration_file {given} does not exist; pass '' for the model's own, or 'none'")
        return replace(where, calibration=given)
    return where


def load_predictor(choice: DemoModel, device: str = "cpu", **overrides: Any) -> Predictor:
    """The predictor of ``choice``, after checking that its calibration was fitted for its checkpoint.

    Raises:
        CalibrationMismatchError: the calibration file records another checkpoint's hash.
    """
    calibration = choice.calibration_file()  # the predictor refuses another checkpoint's file
    return get_predictor(choice.checkpoint, device, calibration_file=str(calibration or ""), **overrides)


def model_lines(predictor: Predictor, choice: DemoModel | None = None) -> tuple[str, str, bool]:
    """What the widget says about the loaded model: the model line, the calibration line, and
    whether the calibration needs attention (it cannot be verified against the checkpoint).

    The predictor checked its calibration file against its checkpoint when it loaded it
    (``Calibration.from_file``): one fitted for another checkpoint never gets here.
    """
    meta = predictor.meta
    auc = meta.get("val_auc")
    epoch = meta.get("epoch")
    model = (
        f"{paths.shown(predictor.checkpoint)}: {meta.get('arch')}, epoch {epoch if epoch is not None else '?'}, "
        f"validation AUC {f'{auc:.3f}' if isinstance(auc, (int, float)) else 'not recorded'}"
    )
    if choice is not None:
        model += f" ({choice.reason})"
    cal = predictor.calibration
    if cal.source is None:
        if choice is not None and choice.calibration is None:
            why = "none asked for (calibration_file='none')"
        elif choice is not None:
            why = f"{paths.shown(cast(Path, choice.calibration))} does not exist"
        else:
            why = "no calibration file"
        return model, f"none applies (temperature 1, threshold 0.5): {why}", False
    line = f"{paths.shown(cal.source)}: temperature {cal.temperature:.3g}, threshold {cal.threshold:.3f}"
    if cal.verified:
        return model, f"{line}, fitted for this checkpoint (its SHA-256 matches)", False
    return (
        model,
        f"{line}; not verified: the file records no checkpoint hash (written by an older version), so it may "
        "belong to another model; re-run dvc repro evaluate to record it",
        True,
    )


def limit_note(max_upload_mb: float) -> str:
    """Why uploads have a size limit, and what to do with larger files.

    The upload widget reads a chosen file in the browser and sends it to the kernel in one
    message. Jupyter drops a message over ``WEBSOCKET_LIMIT_BYTES`` by closing the connection,
    and the browser reconnects at once: the kernel receives nothing and nothing on the page
    changes, so the note under the button is the only place that can say so.
    """
    mib = WEBSOCKET_LIMIT_BYTES / 2**20
    return (
        f"Files over {max_upload_mb:g} MB are refused with a message. Jupyter carries at most {mib:g} MiB per "
        "message: a larger file never reaches Python, and nothing on this page changes. Score such files with "
        "python -m deepfake predict FILE, or start Jupyter with "
        "--ServerApp.tornado_settings=\"{'websocket_max_message_size': 209715200}\" and raise max_upload_mb."
    )


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------


def png_bytes(rgb: np.ndarray) -> bytes:
    """PNG encoding of an RGB uint8 array."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def figure_png(fig: Figure) -> bytes:
    """PNG encoding of a matplotlib figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def draw_box(
    rgb: np.ndarray, box: tuple[int, int, int, int] | None, scale: float, colour: str, max_side: int = 320
) -> np.ndarray:
    """A display copy of ``rgb`` (at most ``max_side`` pixels) with the face box drawn."""
    h, w = rgb.shape[:2]
    k = min(1.0, max_side / max(h, w))
    out = (
        cv2.resize(rgb, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
        if k < 1
        else rgb.copy()
    )
    if box is not None:
        f = k / scale  # input pixels -> display pixels
        x, y, bw, bh = (int(round(v * f)) for v in box)
        rgb_colour = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
        cv2.rectangle(out, (x, y), (x + bw, y + bh), rgb_colour, max(2, round(max(out.shape[:2]) / 120)))
    return out


def frame_plot(video: VideoPrediction, threshold: float) -> bytes:
    """PNG of the per-frame fake probability with the threshold and the video mean."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 2.4), dpi=100)
    ax = fig.add_subplot()
    idx = cast("list[int]", [p.frame for p in video.frames])  # video frames always carry their index
    prob = [p.probability for p in video.frames]
    ax.plot(idx, prob, color="#555555", lw=1, zorder=1)
    ax.scatter(idx, prob, c=[COLOURS[p.label] for p in video.frames], s=22, zorder=2)
    ax.axhline(threshold, color="#888888", ls="--", lw=1, label=f"threshold {threshold:.2f}")
    ax.axhline(video.probability, color=COLOURS[video.label], lw=1.5, label=f"video mean {video.probability:.2f}")
    ax.set(ylim=(-0.02, 1.02), xlabel="frame", ylabel="P(fake)", title="Per-frame fake probability")
    ax.legend(loc="best", fontsize=8, frameon=False)
    fig.tight_layout()
    return figure_png(fig)


class DemoWidget:
    """A line naming the loaded model, FileUpload with its size limit, a predict button and a result
    area, wired to a ``Predictor``.

    ``widget`` is the container to display. ``run`` scores the current upload (the button and,
    with ``auto_predict``, every upload call it). ``model`` (from ``choose_model``) adds to the
    model line why that model was loaded.
    """

    def __init__(self, predictor: Predictor, cfg: DemoConfig = DemoConfig(), model: DemoModel | None = None) -> None:
        self.predictor = predictor
        self.cfg = cfg
        model_line, calibration_line, attention = model_lines(predictor, model)
        # a calibration that cannot be verified against the checkpoint is shown as a warning
        css, colour = (
            ("deepfake-calibration deepfake-warning", "#b9770e") if attention else ("deepfake-calibration", "")
        )
        self.model = W.HTML(
            '<div class="deepfake-model" style="color:#34495e;white-space:normal">'
            f"<b>Model</b> {html.escape(model_line)}<br>"
            f'<b>Calibration</b> <span class="{css}" style="color:{colour or "inherit"}">'
            f"{html.escape(calibration_line)}</span></div>"
        )
        self.upload = W.FileUpload(
            accept=ACCEPT, multiple=False, description="Upload image or video", layout=W.Layout(width="auto")
        )
        self.upload.add_class("deepfake-upload")
        self.button = W.Button(description="Predict", icon="search", button_style="primary")
        self.button.add_class("deepfake-predict")
        note = limit_note(cfg.max_upload_mb)
        self.limit = W.HTML(
            f'<span class="deepfake-limit" title="{html.escape(note)}" style="color:#555">'
            f"files up to {cfg.max_upload_mb:g} MB</span>"
        )
        self.limit_note = W.HTML(
            f'<div class="deepfake-limit-note" style="color:#777;font-size:0.85em;white-space:normal">'
            f"{html.escape(note)}</div>"
        )
        kinds = ", ".join(
            e.lstrip(".").upper() for e in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS if e not in (".jpeg", ".tiff")
        )
        self.status = W.HTML(self._status_html(f"Upload a face image or a video ({kinds})."))
        self.result = W.VBox([])
        self.result.add_class("deepfake-result")
        self.widget = W.VBox(
            [self.model, W.HBox([self.upload, self.button, self.limit]), self.limit_note, self.status, self.result]
        )
        self.widget.add_class("deepfake-demo")
        self._last: tuple[str, bytes] | None = None  # kept in Python only, never in widget state
        self.upload.observe(self._on_upload, names="value")
        self.upload.observe(self._on_upload_error, names="error")
        self.button.on_click(lambda _b: self.run())

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    # -- events ----------------------------------------------------------------------------

    def _on_upload(self, change: dict) -> None:
        files = change["new"]
        if not files:
            return  # our own reset
        self.result.children = ()  # the previous verdict goes as soon as a new file arrives
        try:
            f = files[0]
            self._last = (str(f.get("name", "upload")), bytes(f["content"]))
        except Exception as e:  # a malformed upload value must not raise into the kernel
            self._last = None
            self.show_message(f"Could not read the upload ({type(e).__name__}: {e}).")
            return
        finally:
            self.upload.value = ()  # drop the bytes from the widget state right away
        if self.cfg.auto_predict:
            self.run()
        else:
            self.status.value = self._status_html(f"{html.escape(self._last[0])} uploaded; press Predict.")

    def _on_upload_error(self, change: dict) -> None:
        """The browser could not read the chosen file (the upload widget's ``error``)."""
        if change["new"]:
            self._last = None
            self.show_message(f"The browser could not read the chosen file ({change['new']}); choose it again.")

    def run(self) -> None:
        """Score the last upload and show the result or a message; never raises."""
        if self._last is None:
            self.show_message("Nothing to score yet: upload an image or a video first.", kind="info")
            return
        name, data = self._last
        self.status.value = self._status_html(f"Scoring {html.escape(name)}…")
        self.result.children = ()
        try:
            self._check_size(name, data)
            if kind_of(name) == "video" or looks_like_video(data):
                self._show_video(name, data)
            else:
                self._show_image(name, data)
        except NoFaceError:
            self.show_message(
                f"No face found in {name}. The model was trained on detected faces "
                f"({self.predictor.describe_preprocessing()}); upload a clearer frontal photo."
            )
        except InputTooLargeError as e:
            self.show_message(f"Too large: {e}")
        except UnreadableInputError as e:
            self.show_message(f"Not a readable image or video: {e}")
        except InputError as e:
            self.show_message(str(e))
        except Exception as e:  # the demo reports anything else instead of breaking the kernel
            last = traceback.extract_tb(e.__traceback__)[-1]
            self.show_message(
                f"Unexpected error while scoring {name}: {type(e).__name__}: {e} "
                f"({Path(last.filename).name}:{last.lineno})."
            )

    def _check_size(self, name: str, data: bytes) -> None:
        mb = len(data) / 1e6
        if mb > self.cfg.max_upload_mb:
            raise InputTooLargeError(
                f"{name} is {mb:.1f} MB; this demo accepts files up to {self.cfg.max_upload_mb:g} MB "
                f"(max_upload_mb). Score it with python -m deepfake predict {name}."
            )
        if not data:
            raise UnreadableInputError(f"{name} is empty (0 bytes).")

    # -- rendering -------------------------------------------------------------------------

    def show_message(self, text: str, kind: str = "error") -> None:
        """Replace the result with a message (``error`` or ``info``)."""
        colour = "#c0392b" if kind == "error" else "#34495e"
        self.status.value = (
            f'<div class="deepfake-message deepfake-{kind}" style="color:{colour};white-space:normal">'
            f"{html.escape(text)}</div>"
        )
        self.result.children = ()

    @staticmethod
    def _status_html(text: str) -> str:
        return f'<div class="deepfake-status" style="color:#34495e">{text}</div>'

    def _verdict(self, label: str, prob: float, detail: str) -> list[W.Widget]:
        t = self.predictor.calibration.threshold
        verdict = W.HTML(
            '<div class="deepfake-verdict" style="font-size:1.3em"><b '
            f'style="color:{COLOURS[label]}">{label.upper()}</b>'
            f' &nbsp;probability of fake <span class="deepfake-probability">{prob:.3f}</span>'
            f' <span style="color:#777;font-size:0.75em">(threshold {t:.3f})</span></div>'
        )
        verdict.add_class("deepfake-verdict-box")
        about = W.HTML(f'<div class="deepfake-detail" style="color:#555">{html.escape(detail)}</div>')
        bar = W.FloatProgress(
            value=prob,
            min=0.0,
            max=1.0,
            description="P(fake)",
            bar_style="danger" if label == "fake" else "success",
            layout=W.Layout(width="420px"),
        )
        bar.add_class("deepfake-bar")
        return [verdict, bar, about]

    def _figure(self, png: bytes, width: int, height: int, caption: str, css: str) -> W.VBox:
        img = W.Image(value=png, format="png", width=width, height=height)
        img.add_class(css)
        return W.VBox([W.HTML(f"<small>{html.escape(caption)}</small>"), img])

    def _panels(self, pred: Prediction, cam: GradCam, prep: Prepared, rgb: np.ndarray | None = None) -> W.HBox:
        rgb = prep.rgb if rgb is None else rgb
        assert rgb is not None  # explain() keeps the decoded image (keep_image=True)
        shown = draw_box(rgb, pred.box, prep.scale, COLOURS[pred.label])
        where = "face box" if pred.box else "whole image (taken as a face crop)"
        px = self.cfg.display_px
        h, w = cam.map_size
        fig = gradcam_figure(cam, title=f"{cam.layer}: {h}x{w} map, upsampled")
        fw, fh = fig.get_size_inches()
        return W.HBox(
            [
                self._figure(
                    png_bytes(shown),
                    px,
                    round(px * shown.shape[0] / shown.shape[1]),
                    f"Input, {where}",
                    "deepfake-input",
                ),
                self._figure(
                    figure_png(fig),
                    round(px * fw / fh),
                    px,
                    f"Grad-CAM: where the evidence for {cam.target.upper()} lies",
                    "deepfake-gradcam",
                ),
            ]
        )

    def _show_image(self, name: str, data: bytes) -> None:
        pred, cam, prep = self.predictor.explain(data, name)
        w, h = pred.image_size
        face = (
            f"face box x={pred.box[0]} y={pred.box[1]} w={pred.box[2]} h={pred.box[3]}"
            if pred.box
            else "whole image scored"
        )
        detail = f"{name}: {w}x{h} px, {face}, {pred.timing_ms['total']:.0f} ms."
        self.result.children = (*self._verdict(pred.label, pred.probability, detail), self._panels(pred, cam, prep))
        self.status.value = self._status_html(f"Scored {html.escape(name)}.")

    def _show_video(self, name: str, data: bytes) -> None:
        video = self.predictor.predict_video(data, name, frames=self.cfg.video_frames or None, keep_frames=True)
        top = max(video.frames, key=lambda p: p.probability)
        assert top.frame is not None  # video frames always carry their index
        pred, cam, prep = self.predictor.explain(video.images[top.frame], f"{name}#{top.frame}")
        skipped = f", {len(video.skipped)} without a face skipped" if video.skipped else ""
        detail = (
            f"{name}: video verdict from the mean of {len(video.frames)} of {video.n_frames} frames{skipped}; "
            f"most suspicious frame {top.frame} (P(fake) {top.probability:.3f}) shown below."
        )
        plot = W.Image(value=frame_plot(video, self.predictor.calibration.threshold), format="png")
        plot.add_class("deepfake-frame-plot")
        self.result.children = (
            *self._verdict(video.label, video.probability, detail),
            plot,
            self._panels(pred, cam, prep),
        )
        self.status.value = self._status_html(f"Scored {html.escape(name)} ({len(video.frames)} frames).")

    # -- what is shown (tests and notebooks read these) ------------------------------------

    def shown(self) -> dict[str, Any]:
        """What the widget shows as data: model line, size limit and its note, message, verdict text,
        probability, bar value, image and plot kinds."""
        out: dict[str, Any] = {
            "model": _text(self.model.value),
            "limit": _text(self.limit.value),
            "limit_note": _text(self.limit_note.value),
            "status": _text(self.status.value),
        }
        for w in _walk(self.result):
            if isinstance(w, W.HTML) and "deepfake-detail" in w.value:
                out["detail"] = _text(w.value)
            elif isinstance(w, W.HTML) and "deepfake-verdict" in w.value:
                out["verdict"] = _text(w.value)
                out["label"] = out["verdict"].split()[0].lower()
                out["probability"] = float(w.value.split('deepfake-probability">')[1].split("<")[0])
            elif isinstance(w, W.FloatProgress):
                out["bar"] = w.value
            elif isinstance(w, W.Image):
                for css in ("deepfake-input", "deepfake-gradcam", "deepfake-frame-plot"):
                    if css in w._dom_classes:
                        out[css.removeprefix("deepfake-")] = np.asarray(Image.open(io.BytesIO(w.value)).convert("RGB"))
        if "deepfake-message" in self.status.value:
            out["message"] = out["status"]
        return out


def _walk(w: W.Widget):
    yield w
    for c in getattr(w, "children", ()):
        yield from _walk(c)


def _text(markup: str) -> str:
    """Visible text of an HTML fragment, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", markup)).replace("\xa0", " ").split())
