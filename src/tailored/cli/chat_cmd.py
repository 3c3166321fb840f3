"""``tailored chat``: talk to a run folder or a model, interactively or with one --prompt."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="Chat with a run folder or a base model.")
    p.add_argument("target", nargs="?", default="smollm2", help="Run folder, model folder, .gguf or 'smollm2'.")
    p.add_argument("--prompt", default=None, help="Answer this one prompt and exit.")
    p.add_argument("--system", default=None, help="System prompt.")
    p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy.")
    p.add_argument("--constrain", default=None, choices=["labels", "none"],
                   help="labels: answer with exactly one of a classification run's labels.")
    p.add_argument("--json-schema", dest="json_schema", default=None, help="Answer with JSON valid against this schema file.")
    p.add_argument("--json", dest="json_object", action="store_true", help="Answer with a JSON object.")
    p.add_argument("--regex", default=None, help="Answer with text matching this regular expression.")
    p.add_argument("--choice", dest="choices", action="append", default=None, help="Allowed answer (repeat for each).")
    p.add_argument("--which", default="auto", help="Weights of a run: auto (the best validation step's when kept, else the final ones), final, best, or a checkpoint name (step-000050). [default: auto]")
    p.add_argument("--url", default=None, help="Talk to a running `tailored serve` (e.g. http://127.0.0.1:8000/v1) instead.")
    p.add_argument("--model", default=None, help="With --url: model id or run name (default: the first fine-tune).")
    p.add_argument("--api-key", dest="api_key", default=None, help="With --url: the server's key (default $TAILORED_API_KEY).")
    p.set_defaults(func=run_chat)


def _say_weights(target: str, which: str) -> None:
    from tailored.config.manifest import RunFolder, is_run_dir

    if is_run_dir(target):
        print(f"weights: {RunFolder(target).describe_weights(which)}", file=sys.stderr)


def run_chat(args: argparse.Namespace) -> int:
    from tailored.eval.generate import load

    if getattr(args, "url", None):
        from tailored.serve.client import RemoteChat

        model = RemoteChat(args.url, args.model, args.api_key)
    else:
        model = load(args.target, which=args.which)
        _say_weights(args.target, args.which)
        if model.neighbours is not None:
            print(f"prompts: {model.neighbours.listing()}", file=sys.stderr)
    history = [{"role": "system", "content": args.system}] if args.system else []
    settings = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature}
    from tailored.eval.structured import cli_structure

    remote = bool(getattr(args, "url", None))  # the server knows the run's labels: it is asked for them
    settings["constraint"] = cli_structure(None if remote else model, constrain=None if remote else args.constrain,
                                           json_schema=args.json_schema, json_object=args.json_object, regex=args.regex,
                                           choices=args.choices)
    if remote and args.constrain == "labels":
        settings["constrain"] = "labels"
    if args.prompt is not None:
        print(model.chat(history + [{"role": "user", "content": args.prompt}], **settings))
        return 0
    print(f"chatting with {model.name} (empty line or Ctrl-D to quit)", file=sys.stderr)
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            break
        if not text:
            break
        history.append({"role": "user", "content": text})
        answer = model.chat(history, **settings)
        history.append({"role": "assistant", "content": answer})
        print(f"model> {answer}")
    return 0
