"""Latency, cost per 1,000 requests (measured here; estimated on a named GPU) and the one-off training cost.

This machine: the measured wall time of the strategy's answers, priced at the table's ``cpu`` row
(``tailored/estimate/prices.yaml``, or ``--prices``). A named GPU: compute-bound FLOPs, 2 × parameters
per prompt or generated token for inference and 6 × parameters per trained token for training, at
the device's peak bf16 throughput × the table's utilisation. The GPU figures are estimates, not
measurements; they rank strategies by the tokens they spend, which is what differs between them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tailored.estimate.prices import device_entry, load_prices


def latency(seconds: list[float]) -> dict[str, float]:
    arr = np.asarray(seconds or [0.0])
    return {"p50_s": float(np.percentile(arr, 50)), "p95_s": float(np.percentile(arr, 95)), "mean_s": float(arr.mean())}


class Pricing:
    """The price table's rows for this machine and one GPU."""

    def __init__(self, gpu: str = "h100", prices: str | None = None) -> None:
        table = load_prices(prices)
        self.utilisation = float(table.get("utilisation", 0.35))
        self.cpu = device_entry(table, "cpu")
        self.gpu = device_entry(table, gpu)
        self.prices_date = table.get("prices_date")

    def describe(self) -> dict[str, Any]:
        return {"gpu": self.gpu["name"], "gpu_usd_per_hour": self.gpu["usd_per_hour"], "gpu_tflops": self.gpu["tflops"],
                "utilisation": self.utilisation, "cpu_usd_per_hour": self.cpu["usd_per_hour"], "prices_date": self.prices_date}

    def gpu_seconds(self, flops: float) -> float:
        return flops / (float(self.gpu["tflops"]) * 1e12 * self.utilisation)

    def per_1k(self, wall_seconds: float, requests: int, params: int, prompt_tokens: float, new_tokens: float) -> dict[str, float]:
        """Cost of 1,000 requests: measured here, estimated on the GPU (tokens are means per request)."""
        here_s = 1000 * wall_seconds / max(requests, 1)
        gpu_s = 1000 * self.gpu_seconds(2 * params * (prompt_tokens + new_tokens))
        return {"here_seconds": here_s, "here_usd": here_s / 3600 * float(self.cpu["usd_per_hour"] or 0.0),
                "gpu_seconds": gpu_s, "gpu_usd": gpu_s / 3600 * float(self.gpu["usd_per_hour"])}

    def training(self, seconds: float, params: int, trained_tokens: int) -> dict[str, float]:
        """One-off training cost: the run's measured seconds here, 6·N·tokens FLOPs on the GPU."""
        gpu_s = self.gpu_seconds(6 * params * trained_tokens)
        return {"here_seconds": seconds, "here_usd": seconds / 3600 * float(self.cpu["usd_per_hour"] or 0.0),
                "gpu_seconds": gpu_s, "gpu_usd": gpu_s / 3600 * float(self.gpu["usd_per_hour"])}


def payback(training: dict[str, float], tuned: dict[str, float], other: dict[str, float], unit: str) -> float | None:
    """Requests after which training has paid for itself against ``other`` (None when it never does)."""
    saving = (other[unit] - tuned[unit]) / 1000
    return training[unit] / saving if saving > 0 else None
