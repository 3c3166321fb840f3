"""Shared pieces of every export: the result type, the error type, atomic output folders, hashes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tailored.config.files import atomic_folder
from tailored.errors import TailoredError

FORMATS = ("merged", "adapter", "gguf")
# Accepted --dtype values per format; "auto" resolves to the first of each list.
DTYPES = {
    "merged": ("auto", "f32", "bf16", "f16"),
    "adapter": ("auto",),
    "gguf": ("auto", "f16", "q8_0", "f32"),
}
EXPORT_RECORD = "tailored_export.json"


class ExportError(TailoredError):
    """A run cannot be exported in the requested form (the hint names the form that works)."""


@dataclass
class ExportResult:
    """What :func:`tailored.export.export_run` wrote.

    ``files`` maps each written file (relative to ``out_dir``) to its size in bytes; ``warnings`` are
    problems a server or runtime would trip over; ``notes`` are things done on the user's behalf.
    """

    out_dir: Path
    format: str
    dtype: str
    files: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    main_file: Path | None = None  # the .gguf for format gguf
    weights: str = "final"  # which of the run's weights were exported (RunFolder.describe_weights)

    @property
    def size_bytes(self) -> int:
        return sum(self.files.values())

    def as_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "format": self.format, "dtype": self.dtype, "files": self.files,
                "warnings": self.warnings, "notes": self.notes, "seconds": round(self.seconds, 2),
                "main_file": str(self.main_file) if self.main_file else None, "weights": self.weights}



def resolve_dtype(fmt: str, dtype: str | None) -> str:
    """Check ``dtype`` against what ``fmt`` can write; ``auto``/None becomes the format's default."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r} is not known", hint=f"choose one of: {', '.join(FORMATS)}")
    allowed = DTYPES[fmt]
    dtype = (dtype or "auto").lower().replace("float32", "f32").replace("float16", "f16").replace("bfloat16", "bf16")
    if dtype not in allowed:
        hint = ("adapter weights are exported exactly as trained" if fmt == "adapter"
                else f"--format {fmt} writes: {', '.join(allowed)}")
        raise ExportError(f"--dtype {dtype} is not available for --format {fmt}", hint=hint)
    return dtype


def export_folder(out_dir: Path, *, force: bool = False) -> Any:
    """The atomic folder an export is written into (:func:`tailored.config.files.atomic_folder`).

    A failed or killed export leaves ``out_dir`` as it was (at most a hidden ``.NAME.tmp-*`` folder).
    An existing non-empty ``out_dir`` is refused unless ``force``, and even then unless it is a previous
    export (holds ``tailored_export.json``), so a mistyped ``-o`` cannot delete a run or a home folder.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} exists and is a file", hint="pass a folder path to -o")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not force:
            raise ExportError(f"{out_dir} already exists and is not empty", hint="pass another -o, or --force to replace it")
        if not (out_dir / EXPORT_RECORD).is_file():
            # --force deletes the folder: only ever a previous export, never a run, a home folder or a typo.
            raise ExportError(f"{out_dir} is not empty and is not a previous export (no {EXPORT_RECORD}); --force "
                              "only replaces exports", hint="choose another -o, or remove the folder yourself")
    return atomic_folder(out_dir)


def list_files(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` (relative names) with its size."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}
