"""Tailored: make pretrained language models yours.

The public entry points are thin re-exports, imported lazily so that ``import tailored`` stays fast:

- :func:`check_data` -- validate a dataset file and get a report.
- :func:`train` -- fine-tune a model; returns the run folder and its final metrics.
- :func:`load` -- load a base model or a run folder for generation.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["check_data", "train", "load", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "check_data":
        from tailored.train.preflight import check_data

        return check_data
    if name == "train":
        import tailored.train  # a callable module: tailored.train(...) runs tailored.train.run.train

        return tailored.train
    if name == "load":
        from tailored.eval.generate import load

        return load
    raise AttributeError(f"module 'tailored' has no attribute {name!r}")
