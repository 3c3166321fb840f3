"""Helpers shared by the command modules: quiet library logs, settings flags, subcommand groups."""

from __future__ import annotations

import argparse
import logging
import os
import warnings
from collections.abc import Collection, Mapping
from typing import Any, get_args, get_origin

from pydantic import BaseModel


def quiet() -> None:
    """Silence library chatter (loading bars, deprecation notes) so our own output stays readable."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")
    for name in ("bitsandbytes", "accelerate", "peft", "transformers", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def group(subparsers: Any, name: str, help: str) -> Any:
    """The sub-subparsers of command ``name`` (e.g. ``data``), created on first use."""
    cache = getattr(subparsers, "_tailored_groups", None)
    if cache is None:
        cache = subparsers._tailored_groups = {}
    if name not in cache:
        parser = subparsers.add_parser(name, help=help, description=help)
        cache[name] = parser.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")
    return cache[name]


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_value(annotation: Any) -> Any:
    """A converter for argparse that accepts 'auto' where the field does and numbers otherwise."""
    args = get_args(annotation) or (annotation,)

    def convert(text: str) -> Any:
        if text == "auto":
            return text
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        for typ in (int, float):
            if typ in args:
                try:
                    return typ(text)
                except ValueError:
                    continue
        if bool in args:
            return text.lower() in ("1", "true", "yes", "on")
        return text

    return convert


def add_model_flags(parser: argparse.ArgumentParser, model: type[BaseModel], skip: Collection[str] = frozenset(),
                    title: str | None = None, only: Collection[str] | None = None, more_help: Mapping[str, str] | None = None) -> None:
    """One ``--flag-name`` per field, with the field's description as help; defaults stay unset (None).

    ``only`` keeps just those fields; ``more_help`` appends a command's own words to a field's help.
    """
    target = parser.add_argument_group(title) if title else parser
    for name, field in model.model_fields.items():
        if name in skip or (only is not None and name not in only):
            continue
        ann = field.annotation
        shown = field.default is not None and not field.is_required() and not callable(field.default)
        help_text = (field.description or "") + (f" [default: {field.default}]" if shown else "")
        if more_help and name in more_help:
            help_text += " " + more_help[name]
        if ann is bool:
            target.add_argument(flag(name), dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif get_origin(ann) is list or "list" in str(ann):
            target.add_argument(flag(name), dest=name, default=None, help=help_text + " (comma-separated)")
        else:
            target.add_argument(flag(name), dest=name, type=_parse_value(ann), default=None, help=help_text)


def add_method_flags(parser: argparse.ArgumentParser) -> set[str]:
    """The flags of every registered method's options, one group per method (a shared option once); their names."""
    from tailored.methods import get_method, method_names

    seen: set[str] = set()
    for name in method_names():
        opts = get_method(name).Options
        add_model_flags(parser, opts, skip=seen, title=f"{name} options")
        seen |= set(opts.model_fields)
    return seen


def settings_from(args: argparse.Namespace, names: set[str]) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k in names and v is not None}
