"""Temperature scaling of the fake-logit, and the calibration file read by inference.

A network trained with cross-entropy is usually over- (or under-) confident: its scores rank
well but a "0.9" is not right 90 % of the time. Temperature scaling (Guo et al., 2017) divides
the logit by one scalar ``T`` fitted on the validation split by minimising the negative
log-likelihood; ranking (AUC) is unchanged, probabilities become meaningful.

``reports/eval/calibration.json`` holds the result with the keys ``temperature``,
``threshold`` (applied to calibrated probabilities) and ``threshold_rule``; the predictor
loads it as a :class:`Calibration` and applies :func:`calibrated` to its logits.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .utils import write_json

#: Probabilities are clipped to [EPS, 1 - EPS] before log-loss and logits (``deepfake.metrics`` too).
EPS = 1e-7

#: Keys every calibration file has (the inference side relies on them).
REQUIRED_KEYS = ("temperature", "threshold", "threshold_rule")
#: Temperatures are searched in this range; a fit at a bound is flagged.
T_BOUNDS = (0.05, 20.0)


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


@dataclass(frozen=True)
class Calibration:
    """Logit temperature and decision threshold on the calibrated probability, as scoring applies them."""

    temperature: float = 1.0
    threshold: float = 0.5
    source: str | None = None  # the file they came from; None for the identity calibration

    def probability(self, logits) -> np.ndarray:
        """Calibrated fake-probability of raw logits."""
        return calibrated(logits, self.temperature)

    @classmethod
    def from_file(cls, path: str | os.PathLike | None) -> Calibration:
        """The calibration in ``path`` when it exists, else the identity (temperature 1, threshold 0.5)."""
        if not path or not Path(path).is_file():
            return cls()
        _, temperature, threshold = read_calibration(Path(path))
        return cls(temperature, threshold, str(path))


def load_calibration(path: str | os.PathLike) -> dict:
    """Read and check a calibration file written by :func:`save_calibration`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"calibration file {path} does not exist; run the evaluate stage first (dvc repro evaluate)"
        )
    data, _, _ = read_calibration(path)
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path} lacks the key(s) {missing}; it needs {list(REQUIRED_KEYS)}")
    return data
