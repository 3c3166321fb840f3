"""Export a run: a merged Hugging Face folder, the adapter alone, or a GGUF file.

``export_run(run_dir, out_dir, format=..., dtype=...)`` is the one entry point; the run's manifest is
its only input (base model, method, chat template and stop tokens are never asked again).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ExportError", "ExportResult", "export_run"]


def __getattr__(name: str) -> Any:
    if name == "export_run":
        from tailored.export.run import export_run

        return export_run
    if name in ("ExportResult", "ExportError"):
        from tailored.export import common

        return getattr(common, name)
    raise AttributeError(f"module 'tailored.export' has no attribute {name!r}")
