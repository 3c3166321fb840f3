"""``tailored serve``: an OpenAI-compatible server for a base model and every fine-tune of it."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from tailored.cli.common import add_model_flags
    from tailored.serve.settings import ServeSettings

    p = sub.add_parser(
        "serve", help="Serve a base and its fine-tunes behind an OpenAI-compatible API.",
        description="Serve the base model and every run folder under --runs at http://HOST:PORT/v1 "
                    "(chat completions, streaming, models). Fine-tunes are named ft:<base>:<run>:<hash> "
                    "and also answer to their run folder's name.",
    )
    p.add_argument("--runs", nargs="+", action="extend", default=None, metavar="DIR",
                   help=ServeSettings.model_fields["runs"].description)
    add_model_flags(p, ServeSettings, skip={"runs"})
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from tailored.cli.common import settings_from
    from tailored.dashboard import attach
    from tailored.serve.server import serve_forever
    from tailored.serve.settings import ServeSettings, parse_settings

    def with_dashboard(built: object) -> None:
        attach(built)
        s = built.settings  # type: ignore[attr-defined]
        print(f"dashboard on http://{s.host}:{s.port}/", flush=True)

    serve_forever(parse_settings(**settings_from(args, set(ServeSettings.model_fields))), compose=with_dashboard)
    return 0
