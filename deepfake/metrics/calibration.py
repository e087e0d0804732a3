"""Temperature scaling of the fake-logit, and the calibration file read by inference.

A network trained with cross-entropy is usually over- (or under-) confident: its scores rank
well but a "0.9" is not right 90 % of the time. Temperature scaling (Guo et al., 2017) divides
the logit by one scalar ``T`` fitted on the validation split by minimising the negative
log-likelihood; ranking (AUC) is unchanged, probabilities become meaningful.

``reports/eval/calibration.json`` holds the result with the keys ``temperature``,
``threshold`` (applied to calibrated probabilities) and ``threshold_rule``; the predictor
loads it as a :class:`Calibration` and applies :func:`calibrated` to its logits.

A temperature and a threshold belong to one model: the file also records the checkpoint it was
fitted for (``checkpoint`` and the SHA-256 of its file, ``checkpoint_sha256``). Read with the
checkpoint in use, a file fitted for another one is refused (:class:`CalibrationMismatchError`)
and one written before hashes were recorded is used with a warning that it cannot be verified.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core import paths
from ..core.utils import write_json
from ..data.media import sha256_file

log = logging.getLogger(__name__)

#: Probabilities are clipped to [EPS, 1 - EPS] before log-loss and logits (``deepfake.metrics.classification`` too).
EPS = 1e-7

#: Keys every calibration file has (the inference side relies on them).
REQUIRED_KEYS = ("temperature", "threshold", "threshold_rule")
#: Temperatures are searched in this range; a fit at a bound is flagged.
T_BOUNDS = (0.05, 20.0)
#: The key holding the SHA-256 of the checkpoint file a calibration was fitted for.
HASH_KEY = "checkpoint_sha256"


class CalibrationMismatchError(ValueError):
    """A calibration file was fitted for another checkpoint than the one in use."""


def logits_from_probs(probs) -> np.ndarray:
    """Logits (float64) recovered from fake-probabilities clipped to [EPS, 1 - EPS].

    float32 probabilities saturate at 1 for logits above about 16.6; the clip bounds the
    recovered logit at about +-16.1, which only affects images already scored at certainty.
    """
    p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function, without overflow for large ``|z|``."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def calibrated(logits, temperature: float) -> np.ndarray:
    """Calibrated fake-probabilities ``sigmoid(logit / T)``: what every scoring path reports."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return sigmoid(np.asarray(logits, dtype=np.float64) / temperature)


def apply_temperature(probs, temperature: float) -> np.ndarray:
    """Calibrated fake-probabilities: ``sigmoid(logit(p) / T)``."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return sigmoid(logits_from_probs(probs) / temperature)


def nll(logits, y_true, temperature: float = 1.0) -> float:
    """Mean binary negative log-likelihood of ``sigmoid(logits / T)``."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    y = np.asarray(y_true, dtype=np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(logits, y_true, bounds: tuple[float, float] = T_BOUNDS, iters: int = 100) -> tuple[float, bool]:
    """Temperature minimising the validation NLL of ``sigmoid(logits / T)``.

    The NLL is convex in ``a = 1/T`` (a one-feature logistic regression without bias), so its
    derivative ``mean(z * (sigmoid(a z) - y))`` is increasing and the minimum is found by
    bisection on it, exactly and deterministically.

    Args:
        logits: validation fake-logits.
        y_true: validation labels (0 real, 1 fake).
        bounds: allowed temperature range. When the split is perfectly separated the NLL keeps
            falling as ``T -> 0``; the fit then stops at the lower bound.
        iters: bisection steps.

    Returns:
        The temperature and whether it sits at a bound of the search range.
    """
    z = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(y_true, dtype=np.float64).ravel()
    if z.shape != y.shape or z.size == 0:
        raise ValueError(f"need as many labels as logits, and at least one (got {y.size} and {z.size})")
    if not np.isfinite(z).all():
        raise ValueError("logits contain NaN or infinite values")
    t_lo, t_hi = bounds
    if not 0 < t_lo < t_hi:
        raise ValueError(f"temperature bounds must satisfy 0 < low < high, got {bounds}")

    def grad(a: float) -> float:  # d NLL / d a
        return float(np.mean(z * (sigmoid(a * z) - y)))

    a_lo, a_hi = 1.0 / t_hi, 1.0 / t_lo
    if grad(a_lo) >= 0:
        return t_hi, True
    if grad(a_hi) <= 0:
        return t_lo, True
    for _ in range(iters):
        mid = 0.5 * (a_lo + a_hi)
        if grad(mid) > 0:
            a_hi = mid
        else:
            a_lo = mid
    return float(1.0 / (0.5 * (a_lo + a_hi))), False


def save_calibration(
    path: str | os.PathLike, temperature: float, threshold: float, threshold_rule: str, **extra
) -> Path:
    """Write the calibration file (``temperature``, ``threshold``, ``threshold_rule`` and ``extra``)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    return write_json(
        path,
        {
            "temperature": float(temperature),
            "threshold": float(threshold),
            "threshold_rule": str(threshold_rule),
            **extra,
        },
    )


def read_calibration(path: Path) -> tuple[dict, float, float]:
    """Parse an existing calibration file; returns its contents, temperature and threshold.

    Raises ``ValueError`` naming the file when it is not JSON, lacks a numeric
    ``temperature`` or ``threshold``, or holds values out of range.
    """
    try:
        data = json.loads(path.read_text())
        temperature, threshold = float(data["temperature"]), float(data["threshold"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"{path} is not a calibration file (needs numeric 'temperature' and 'threshold'): {e}; "
            "re-run the evaluate stage or delete it"
        ) from e
    if not temperature > 0 or not 0 < threshold < 1:
        raise ValueError(
            f"{path} has temperature {temperature} and threshold {threshold}; "
            "need temperature > 0 and 0 < threshold < 1"
        )
    return data, temperature, threshold


# --------------------------------------------------------------------------------------------
# Which checkpoint a calibration belongs to
# --------------------------------------------------------------------------------------------

_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (remembered per path, size and modification time)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(p)
    return _HASHES[key]


def checkpoint_record(checkpoint: str | os.PathLike) -> dict[str, str]:
    """What a calibration file records about the checkpoint it is fitted for: its path and SHA-256."""
    return {"checkpoint": paths.shown(checkpoint), HASH_KEY: file_sha256(paths.resolve(checkpoint))}


def fitted_for(data: dict, calibration: str | os.PathLike, checkpoint: str | os.PathLike) -> bool:
    """Whether the calibration ``data`` (read from ``calibration``) records ``checkpoint``'s hash.

    Returns:
        True when it does; False when it records no hash (a file written before hashes were recorded).

    Raises:
        CalibrationMismatchError: it records the hash of another checkpoint.
    """
    recorded = data.get(HASH_KEY)
    if not recorded:
        return False
    actual = file_sha256(paths.resolve(checkpoint))
    if recorded != actual:
        raise CalibrationMismatchError(
            f"{paths.shown(calibration)} was fitted for another checkpoint "
            f"({data.get('checkpoint', 'unnamed')}, sha256 {str(recorded)[:12]}), not for {paths.shown(checkpoint)} "
            f"(sha256 {actual[:12]}): its temperature and threshold do not apply to this model. Re-run the "
            "evaluate stage for it (dvc repro evaluate), or pass the calibration file written for this checkpoint "
            "(or none, to score uncalibrated with temperature 1 and threshold 0.5)"
        )
    return True


def check_fitted_for(data: dict, calibration: str | os.PathLike, checkpoint: str | os.PathLike) -> bool:
    """``fitted_for``, logging a warning when the file records no hash and so cannot be verified."""
    verified = fitted_for(data, calibration, checkpoint)
    if not verified:
        log.warning(
            "%s records no checkpoint hash (written before calibrations recorded one), so it cannot be verified "
            "against %s; re-run the evaluate stage (dvc repro evaluate) to record it",
            paths.shown(calibration),
            paths.shown(checkpoint),
        )
    return verified


@dataclass(frozen=True)
class Calibration:
    """Logit temperature and decision threshold on the calibrated probability, as scoring applies them.

    Attributes:
        temperature: divides the logit.
        threshold: calibrated fake-probability at or above which an image is called fake.
        source: the file they came from; None for the identity calibration.
        verified: whether the file was checked against the checkpoint in use: True (it records that
            checkpoint's hash), False (it records no hash), None (not checked).
    """

    temperature: float = 1.0
    threshold: float = 0.5
    source: str | None = None
    verified: bool | None = None

    def probability(self, logits) -> np.ndarray:
        """Calibrated fake-probability of raw logits."""
        return calibrated(logits, self.temperature)

    @classmethod
    def from_file(cls, path: str | os.PathLike | None, checkpoint: str | os.PathLike | None = None) -> Calibration:
        """The calibration in ``path`` when it exists, else the identity (temperature 1, threshold 0.5).

        With ``checkpoint``, the file must have been fitted for it: another checkpoint's
        calibration raises ``CalibrationMismatchError``, and a file that records no checkpoint
        hash is used with a warning (``check_fitted_for``).
        """
        if not path or not Path(path).is_file():
            return cls()
        data, temperature, threshold = read_calibration(Path(path))
        verified = check_fitted_for(data, path, checkpoint) if checkpoint is not None else None
        return cls(temperature, threshold, str(path), verified)


def load_calibration(path: str | os.PathLike, checkpoint: str | os.PathLike | None = None) -> dict:
    """Read and check a calibration file written by :func:`save_calibration`.

    With ``checkpoint``, the file must have been fitted for it (as ``Calibration.from_file`` checks).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"calibration file {path} does not exist; run the evaluate stage first (dvc repro evaluate)"
        )
    data, _, _ = read_calibration(path)
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path} lacks the key(s) {missing}; it needs {list(REQUIRED_KEYS)}")
    if checkpoint is not None:
        check_fitted_for(data, path, checkpoint)
    return data
