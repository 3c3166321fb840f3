"""``tailored``: the command-line entry point."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from tailored import __version__
from tailored.errors import TailoredError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tailored", description="Make pretrained language models yours.")
    parser.add_argument("--version", action="version", version=f"tailored {__version__}")
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
    except Exception as exc:  # an OpenAI-compatible service's answer, said plainly
        if type(exc).__module__.split(".")[0] != "openai":
            raise
        request = getattr(exc, "request", None)
        where = f" ({request.method} {request.url})" if request is not None else ""
        print(f"error: {getattr(exc, 'message', None) or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
