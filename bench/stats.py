"""Latency summaries: p50 / p99 / max with the sample count, and ratios between them."""

from typing import Any

import numpy as np


def summarize(samples_ms: list[float]) -> dict[str, Any]:
    """{n, p50, p99, max, mean} in milliseconds; None figures when there are no samples."""
    if not samples_ms:
        return {"n": 0, "p50": None, "p99": None, "max": None, "mean": None}
    arr = np.asarray(samples_ms, dtype=float)
    return {
        "n": int(arr.size),
        "p50": round(float(np.percentile(arr, 50)), 3),
        "p99": round(float(np.percentile(arr, 99)), 3),
        "max": round(float(arr.max()), 3),
        "mean": round(float(arr.mean()), 3),
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 2)
