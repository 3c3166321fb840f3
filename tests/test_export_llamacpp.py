"""A GGUF export in a real llama.cpp: node-llama-cpp's prebuilt linux-x64 binary (npm, no compiler).

A LoRA fine-tune of the embedded model is exported as GGUF f16 and q8_0; llama.cpp loads each file,
renders the prompt with the file's chat-template metadata (node-llama-cpp's Jinja wrapper), and its
greedy answers are compared with ``tailored chat``'s. node-llama-cpp is installed once into a cache
folder outside the repository (``$TAILORED_NODE_LLAMA_CPP``, default ``~/.cache/tailored-npm/node-llama-cpp``);
the test skips only when it cannot be installed (no node/npm, no registry).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

RUNNER = Path(__file__).parent / "llamacpp" / "greedy.mjs"
PROMPTS = ["What is the capital of France?", "Name a primary colour.", "How many legs does a spider have?"]
MAX_TOKENS = 16


def node_llama_cpp() -> Path:
    """The node_modules folder holding node-llama-cpp, installed on first use."""
    root = Path(os.environ.get("TAILORED_NODE_LLAMA_CPP") or Path.home() / ".cache" / "tailored-npm" / "node-llama-cpp")
    modules = root / "node_modules"
    if (modules / "node-llama-cpp" / "package.json").is_file() and (modules / "@node-llama-cpp" / "linux-x64").is_dir():
        return modules
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the llama.cpp check (apt-get install nodejs npm)")
    root.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["npm", "install", "--prefix", str(root), "--no-audit", "--no-fund", "node-llama-cpp@3"],
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0 or not (modules / "@node-llama-cpp" / "linux-x64").is_dir():
        pytest.skip(f"cannot install node-llama-cpp from npm: {done.stderr.strip()[-300:]}")
    return modules


def in_llama_cpp(modules: Path, gguf: Path, conversations: list[list[dict[str, str]]], tmp: Path) -> dict:
    request = tmp / f"{gguf.stem}.json"
    request.write_text(json.dumps({"node_modules": str(modules), "model": str(gguf), "conversations": conversations,
                                   "max_tokens": MAX_TOKENS}))
    done = subprocess.run(["node", str(RUNNER), str(request)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_gguf_f16_and_q8_0_answer_in_llama_cpp_as_tailored_chat(smol_run: Path, tmp_path: Path) -> None:
    import tailored
    from tailored.export import export_run

    modules = node_llama_cpp()
    chat = tailored.load(smol_run)  # what `tailored chat RUN` answers with (greedy)
    conversations = [[{"role": "user", "content": p}] for p in PROMPTS]
    want_text = [chat.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    want_ids = [chat.prompt_ids(c) for c in conversations]
    answers = [chat.chat(c, max_new_tokens=MAX_TOKENS) for c in conversations]
    want = [chat.tokenizer(a, add_special_tokens=False)["input_ids"] for a in answers]

    agreement = {}
    for dtype in ("f16", "q8_0"):
        gguf = export_run(smol_run, tmp_path / dtype, format="gguf", dtype=dtype).main_file
        got = in_llama_cpp(modules, gguf, conversations, tmp_path)["results"]
        assert [r["prompt_text"] for r in got] == want_text  # the template metadata renders tailored's prompt
        assert [r["prompt_tokens"] for r in got] == want_ids  # ... and llama.cpp tokenizes it the same way
        agreement[dtype] = [_common_prefix(r["answer_tokens"], w) for r, w in zip(got, want)]
        if dtype == "f16":
            assert [r["answer"] for r in got] == answers
            assert [r["answer_tokens"] for r in got] == want
    # q8_0 rounds every weight to 8 bits: its greedy answers start as tailored's (and mostly are them)
    assert min(agreement["q8_0"]) >= 4 and sum(a == len(w) for a, w in zip(agreement["q8_0"], want)) >= 2, agreement


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n
