"""Pre-flight estimates: tokens, memory per device, time and money of a fine-tuning run.

Layer: with ``train`` (it reads data with :mod:`tailored.data`, plans it with training's batching and
asks each method's ``footprint``); nothing below imports it. A run is described by ``tailored
train``'s own settings (:class:`tailored.config.schema.TrainConfig`).
"""

from tailored.estimate.memory import GIB, TrainSetup, estimate_memory
from tailored.estimate.report import Estimate, estimate
from tailored.estimate.shapes import resolve_shape

__all__ = ["GIB", "Estimate", "TrainSetup", "estimate", "estimate_memory", "resolve_shape"]
