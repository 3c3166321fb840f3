"""``tailored``: the command-line entry point."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from pathlib import Path

from tailored import __version__
from tailored.errors import TailoredError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tailored", description="Make pretrained language models yours.")
    parser.add_argument("--version", action="version", version=f"tailored {__version__}")
    parser.add_argument("--debug", action="store_true", help="Show the full traceback of an unexpected error.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    import tailored.cli as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.endswith("_cmd"):
            importlib.import_module(f"tailored.cli.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from tailored.cli.common import quiet

    quiet()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TailoredError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if type(exc).__module__.split(".")[0] == "openai":  # an OpenAI-compatible service's answer, said plainly
            request = getattr(exc, "request", None)
            where = f" ({request.method} {request.url})" if request is not None else ""
            print(f"error: {getattr(exc, 'message', None) or exc}{where}", file=sys.stderr)
            return 1
        if args.debug:
            raise
        log = write_crash_log(argv if argv is not None else sys.argv[1:])
        first = str(exc).strip().split("\n")[0][:300]
        print(f"error: unexpected {type(exc).__name__}: {first}" if first else f"error: unexpected {type(exc).__name__}",
              file=sys.stderr)
        print(f"hint: this is a bug in Tailored; the full traceback is in {log} (rerun with --debug to see it here)"
              if log else "hint: this is a bug in Tailored; rerun with --debug to see the full traceback", file=sys.stderr)
        return 1


def write_crash_log(argv: list[str]) -> Path | None:
    """Write the traceback being handled to ``$TAILORED_HOME/logs/crash-*.txt`` (or the temporary folder); its path."""
    import tempfile
    import time
    import traceback

    from tailored.config.files import atomic_write
    from tailored.models.registry import tailored_home

    text = (f"tailored {__version__}, python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
            f"command: tailored {' '.join(argv)}\n\n{traceback.format_exc()}")
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    for folder in (tailored_home() / "logs", Path(tempfile.gettempdir())):
        try:
            atomic_write(folder / name, text)
            return folder / name
        except OSError:
            continue
    return None


if __name__ == "__main__":
    sys.exit(main())
