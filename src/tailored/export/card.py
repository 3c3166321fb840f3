"""The model card (README.md) of an export, written only from the run's manifest.

It says what the model is (base, method, data, hyperparameters, metrics), what to watch out for
(red flags recorded by training or evaluation), and how to use the exported files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tailored.config.manifest import Manifest, RunFolder

USAGE = {
    "merged": """```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tok = AutoTokenizer.from_pretrained("{out}")
model = AutoModelForCausalLM.from_pretrained("{out}")
ids = tok.apply_chat_template([{{"role": "user", "content": "Hello"}}], add_generation_prompt=True, return_tensors="pt")
print(tok.decode(model.generate(ids, max_new_tokens=64)[0][ids.shape[1]:], skip_special_tokens=True))
```
The generation config already stops on the end-of-turn token; the tokenizer carries the training chat template.""",
    "adapter": """```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained("{base}")
model = PeftModel.from_pretrained(base, "{out}")
tok = AutoTokenizer.from_pretrained("{out}")  # the training chat template
```
vLLM: `vllm serve {base} --enable-lora --lora-modules mine={out} --max-lora-rank {rank}`""",
    "gguf": """```bash
llama-cli -m {out}/{file} -cnv          # llama.cpp reads the chat template and stop token from the file
ollama create mine -f Modelfile         # Modelfile: FROM ./{file}
```
```python
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained("{out}", gguf_file="{file}")
```""",
}


def red_flags(run_dir: Path, manifest: Manifest) -> tuple[str | None, list[str]]:
    """(overall verdict, one line per flag) from ``red_flags.json``, else the manifest's summary.

    ``red_flags.json`` (written after training and by ``tailored eval``) holds ``verdict`` and
    ``flags`` with ``name``, ``verdict``, ``summary`` and ``fixes``; the manifest keeps
    ``{"verdict": ..., NAME: VERDICT, ...}``.
    """
    path = RunFolder(run_dir).red_flags
    data: Any = None
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            return None, [f"red_flags.json is not valid JSON ({path})"]
    if isinstance(data, dict) and isinstance(data.get("flags"), list):
        lines = []
        for flag in data["flags"]:
            fix = f" Fix: {flag['fixes'][0]}" if flag.get("fixes") and flag.get("verdict") in ("warning", "red") else ""
            lines.append(f"**{flag.get('verdict', '?')}** {flag.get('name', '?')}: {flag.get('summary', '')}{fix}")
        if data.get("to_complete"):
            lines.append(f"**incomplete**: {data['to_complete']}")
        return data.get("verdict"), lines
    summary = manifest.red_flags
    if summary:
        skip = ("verdict", "level", "to_complete")
        return summary.get("verdict"), [f"**{v}** {k}" for k, v in summary.items() if k not in skip]
    return None, []


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value)


def model_card(run_dir: Path, manifest: Manifest, *, fmt: str, dtype: str, out_name: str,
               stop_tokens: list[str], notes: list[str], warnings: list[str], main_file: str | None = None) -> str:
    """Markdown text of README.md for an export of ``run_dir``.

    Args:
        run_dir: the run folder.
        manifest: its manifest.
        fmt: export format (merged, adapter, gguf).
        dtype: the exported weight type.
        out_name: the export folder's name (used in the examples).
        stop_tokens: the tokens generation stops on.
        notes: things the export did (dequantization, fixes).
        warnings: problems found (server compatibility, ...).
        main_file: the GGUF file name, for format gguf.
    """
    base, method, hp = manifest.base_model, manifest.method, manifest.hyperparameters
    train, val = manifest.data.train, manifest.data.validation
    metrics = manifest.metrics.model_dump() if manifest.metrics else {}
    hub = base.spec if base.kind == "hub" else None
    lines = ["---", "library_name: " + ("peft" if fmt == "adapter" else "transformers")]
    if hub:
        lines.append(f"base_model: {hub}")
    lines += ["tags:", "- tailored", f"- {method.name}", "---", "",
              f"# {Path(run_dir).name} ({fmt}, {dtype})", "",
              (f"Fine-tuned from **{base.name}** (`{base.spec}`, {base.kind}, content hash "
               f"`{base.content_hash[:16]}`) with **{method.name}** by Tailored."), ""]
    verdict, flags = red_flags(run_dir, manifest)
    if flags:
        lines += ["## Red flags", "", f"Overall: **{verdict or '?'}** (checked after training / by `tailored eval`).", "",
                  *[f"- {f}" for f in flags], ""]
    lines += ["## Training", "", "| setting | value |", "| --- | --- |"]
    for key, value in {**method.options, **hp}.items():
        lines.append(f"| {key} | {_fmt(value)} |")
    lines += ["", "## Data", "",
              (f"- train: `{Path(train.path).name}` — {train.examples} examples "
               f"({train.used} used), sha256 `{train.sha256[:16]}`")]
    if val:
        lines.append(f"- validation: `{Path(val.path).name}` — {val.examples} examples, sha256 `{val.sha256[:16]}`")
    lines += ["", "## Metrics", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items() if not isinstance(v, (dict, list))]
    lines += ["", "## Chat format", "",
              f"Stops on: {', '.join(f'`{t}`' for t in stop_tokens)}. The chat template is the one used in training:", "",
              "```jinja", manifest.chat_template or "(none)", "```", ""]
    if notes or warnings:
        lines += ["## Export notes", "", *[f"- note: {n}" for n in notes], *[f"- warning: {w}" for w in warnings], ""]
    rank = method.options.get("lora_r", 16)
    usage = USAGE[fmt].format(out=out_name, file=main_file or "", rank=max(16, int(rank)), base=base.spec)
    lines += ["## Use", "", usage, ""]
    return "\n".join(lines)
