"""``make demo``: the main job end to end on the embedded model, in a few minutes on a CPU.

Checks the example data, fine-tunes SmolLM2-135M-Instruct with LoRA to triage support tickets into a
fixed JSON format, then prints base and tuned answers to held-out tickets side by side, the
validation loss before and after, and where the run folder is.
"""

from __future__ import annotations

import argparse
import json
import time
from importlib import resources
from pathlib import Path


def example_file(name: str) -> Path:
    return Path(str(resources.files("tailored") / "examples" / name))


def _valid_json(text: str) -> bool:
    try:
        obj = json.loads(text)
    except ValueError:
        return False
    return isinstance(obj, dict) and set(obj) == {"category", "urgency"}


def triage_schema(rows: list[dict]) -> dict:
    """The JSON schema of the triage answers: each key's values as seen in the training answers (enums)."""
    values: dict[str, set[str]] = {"category": set(), "urgency": set()}
    for row in rows:
        answer = json.loads(row["messages"][-1]["content"])
        for key in values:
            values[key].add(answer[key])
    return {"type": "object", "properties": {k: {"enum": sorted(v)} for k, v in values.items()},
            "required": list(values), "additionalProperties": False}


def main(argv: list[str] | None = None) -> int:
    from tailored.cli.common import quiet

    quiet()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default=f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=6, help="Held-out tickets shown side by side.")
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    import tailored
    from tailored.data.jsonl import read_json_rows
    from tailored.data.readers import read_records
    from tailored.eval.generate import GenerationSettings

    console = Console()
    train_file, val_file = example_file("triage_train.jsonl"), example_file("triage_validation.jsonl")
    console.rule("[bold]1. check the data")
    report = tailored.check_data(train_file)
    console.print(report.render())
    if report.has_errors:
        return 1

    console.rule("[bold]2. fine-tune SmolLM2-135M-Instruct with LoRA")
    start = time.time()
    result = tailored.train(data=str(train_file), validation=str(val_file), output=args.output, epochs=args.epochs,
                            batch_size=8, eval_every=20, save_every=10_000)
    console.print(f"trained in {time.time() - start:.0f} s")

    console.rule("[bold]3. base vs tuned on held-out tickets")
    held_out = read_records(val_file).examples[: args.samples]
    prompts = [[m for m in ex.messages if m["role"] != "assistant"] for ex in held_out]
    settings = GenerationSettings(max_new_tokens=40)
    base = tailored.load("smollm2")
    base_answers = base.generate_batch(prompts, settings)
    from tailored.engine.constraints import Structure

    schema = triage_schema(read_json_rows(train_file))
    held = base.generate_batch(prompts, GenerationSettings(max_new_tokens=40, constraint=Structure("json_schema", schema)))
    del base
    tuned = tailored.load(result.run_dir)
    tuned_answers = tuned.generate_batch(prompts, settings)
    table = Table(show_lines=True)
    for col in ("ticket", "expected", "base model", "tuned model"):
        table.add_column(col, overflow="fold")
    for ex, b, t in zip(held_out, base_answers, tuned_answers):
        short = b if len(b) <= 140 else b[:140].rstrip() + " …"
        table.add_row(ex.messages[1]["content"], ex.messages[-1]["content"], short, t)
    console.print(table)
    ok_base = sum(map(_valid_json, base_answers))
    ok_tuned = sum(map(_valid_json, tuned_answers))
    exact = sum(t.strip() == ex.messages[-1]["content"] for ex, t in zip(held_out, tuned_answers))
    console.print(f"valid JSON in the required format: base {ok_base}/{len(prompts)} · tuned {ok_tuned}/{len(prompts)} "
                  f"(exactly right: {exact}/{len(prompts)})")
    held_exact = sum(json.loads(h) == json.loads(ex.messages[-1]["content"]) for ex, h in zip(held_out, held) if _valid_json(h))
    console.print(f"base model held to the JSON schema (structured output, no training): valid "
                  f"{sum(map(_valid_json, held))}/{len(prompts)} · right {held_exact}/{len(prompts)} -- the format is "
                  f"guaranteed, the judgement is what fine-tuning adds")

    history = read_json_rows(result.run_dir / "metrics.jsonl")
    val = [h["loss"] for h in history if h["split"] == "validation"]
    first_val = result.manifest.metrics.initial_validation_loss if result.manifest.metrics else None
    console.rule("[bold]4. result")
    if first_val is not None:
        console.print(f"validation loss: before {first_val:.3f} → after {val[-1]:.3f}")
    elif val:
        console.print(f"validation loss after training: {val[-1]:.3f}")
    console.print(f"run folder: [bold]{result.run_dir}[/bold]")
    console.print(f"next: tailored chat {result.run_dir} --prompt 'My order #123 never arrived. Please help ASAP.'")
    console.print(f"      tailored report {result.run_dir} --html report.html   (loss curves, red flags)")
    console.print("      tailored chat RUN --json-schema SCHEMA.json --prompt '...'   (answers always valid JSON)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
