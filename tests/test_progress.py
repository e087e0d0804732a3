import io
import logging
import sys

import pytest

from deepfake.core import progress as P


def test_line_progress_prints_count_rate_and_eta_at_its_interval():
    out = io.StringIO()
    bar = P.LineProgress(total=10, desc="epoch 1/3", unit="images", interval=0.0, stream=out)
    bar.update(4)
    line = out.getvalue().strip().splitlines()[-1]
    assert "epoch 1/3: 4/10 images (40%)" in line and "images/s" in line or "s/images" in line
    assert "ETA" in line
    bar.update(6)
    bar.close()
    lines = out.getvalue().strip().splitlines()
    assert "10/10 images (100%)" in lines[-1] and "elapsed" in lines[-1]
    assert len(lines) == 2  # closing adds no second line for the same count


def test_line_progress_stays_silent_within_its_interval():
    out = io.StringIO()
    bar = P.LineProgress(range(5), desc="validate", interval=3600, stream=out)
    assert list(bar) == list(range(5)) and bar.n == 5
    assert out.getvalue() == ""  # nothing printed: no last line either


def test_progress_is_a_log_line_counter_in_a_stage_and_silent_when_disabled(monkeypatch):
    monkeypatch.setenv(P.STAGE_ENV, "train")
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    bar = P.progress(total=3, desc="x")
    assert isinstance(bar, P.LineProgress) and bar.interval == P.DEFAULT_INTERVAL
    monkeypatch.setenv(P.INTERVAL_ENV, "2.5")
    assert P.progress(total=3).interval == 2.5
    assert P.progress(total=3, disable=True).interval == float("inf")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert P.progress(total=3).interval == float("inf")


def test_stage_lines_carry_the_stage_name(monkeypatch):
    monkeypatch.setenv(P.STAGE_ENV, "evaluate")
    out = io.StringIO()
    bar = P.LineProgress(total=2, desc="robustness", interval=0.0, stream=out)
    bar.update()
    assert "[evaluate] robustness: 1/2" in out.getvalue()


@pytest.fixture()
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def test_stage_logging_sends_messages_to_the_stage_log_with_time_and_stage(monkeypatch, restore_logging):
    out = io.StringIO()
    monkeypatch.setattr(P, "_terminal", out)
    P.configure_logging("split")
    logging.getLogger("deepfake.test").info("2400 images in 100 groups")
    line = out.getvalue().strip()
    assert line.endswith("[split] 2400 images in 100 groups") and line[2] == ":"  # HH:MM:SS first
    root = logging.getLogger()
    assert len(root.handlers) == (2 if "ipykernel" in sys.modules else 1)  # no duplicate handlers
    P.configure_logging("split")
    assert len(root.handlers) == (2 if "ipykernel" in sys.modules else 1)
