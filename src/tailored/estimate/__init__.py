"""Pre-flight estimates: tokens, memory per device, time and money of a fine-tuning run.

Layer: after ``train`` (it reads data with :mod:`tailored.data` and model folders with
:mod:`tailored.models`); nothing below imports it.
"""

from tailored.estimate.memory import GIB, TrainSetup, estimate_memory
from tailored.estimate.report import Estimate, estimate
from tailored.estimate.shapes import resolve_shape

__all__ = ["GIB", "Estimate", "TrainSetup", "estimate", "estimate_memory", "resolve_shape"]
