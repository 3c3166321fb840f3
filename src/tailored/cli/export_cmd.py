"""``tailored export RUN -o DIR``: a merged HF folder, the adapter alone, or a GGUF file."""

from __future__ import annotations

import argparse
import json
import sys

NEXT_STEP = {
    "merged": "load it:  AutoModelForCausalLM.from_pretrained({out!r})   or  tailored chat {out}",
    "adapter": "serve it: vllm serve <base> --enable-lora --lora-modules name={out}   (see README.md in the folder)",
    "gguf": "run it:   llama-cli -m {file} -cnv    (chat template and stop token are inside the file)",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="Export a run: merged HF model, adapter, or GGUF.",
                       description="Export a run folder. Base model, method, chat template and stop tokens come from "
                                   "its manifest.")
    p.add_argument("run", help="Run folder written by `tailored train`.")
    p.add_argument("-o", "--output", required=True, help="Folder to create (refused if it exists and is not empty).")
    p.add_argument("--format", default="merged", choices=["merged", "adapter", "gguf"],
                   help="merged: HF folder with the weights folded in (default); adapter: the peft adapter alone, "
                        "checked for vLLM/LoRAX; gguf: one GGUF file for llama.cpp/Ollama.")
    p.add_argument("--dtype", default="auto", choices=["auto", "f32", "bf16", "f16", "q8_0"],
                   help="merged: f32 (auto) | bf16 | f16; gguf: f16 (auto) | q8_0 | f32; adapter: as trained.")
    p.add_argument("--which", default="auto", help="Weights of a run: auto (the best validation step's when kept, else the final ones), final, best, or a checkpoint name (step-000050). [default: auto]")
    p.add_argument("--force", action="store_true", help="Replace an existing output folder.")
    p.add_argument("--json", action="store_true", help="Print the result as JSON.")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from tailored.export import export_run

    result = export_run(args.run, args.output, format=args.format, dtype=args.dtype, which=args.which, force=args.force)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
        return 0
    print(f"exported {args.run} as {result.format} ({result.dtype}) to {result.out_dir} in {result.seconds:.1f} s")
    print(f"weights: {result.weights}")
    for name, size in result.files.items():
        print(f"  {name:32s} {size / 1e6:10.2f} MB")
    for note in result.notes:
        print(f"note: {note}")
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(NEXT_STEP[result.format].format(out=str(result.out_dir), file=str(result.main_file)))
    return 0
