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


def thin(samples_ms: list[float], keep: int = 2000) -> list[float]:
    """At most `keep` samples that trace the same distribution (evenly spaced quantiles),
    so result files stay small; summaries are always computed from every sample."""
    if len(samples_ms) <= keep:
        return [round(s, 3) for s in samples_ms]
    ordered = np.sort(np.asarray(samples_ms, dtype=float))
    picks = np.linspace(0, ordered.size - 1, keep).round().astype(int)
    return [round(float(ordered[i]), 3) for i in picks]
