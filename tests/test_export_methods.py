"""Every registered method through every export format (tiny model, one training step each).

Mergeable methods must give a merged folder and a GGUF whose logits equal the unmerged run; the
others must refuse both with a hint to --format adapter. Adapter export must flag what servers reject.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tailored.export import ExportError, export_run
from tailored.methods import get_method, method_names

SKIP = {"qlora": "bitsandbytes training is slow on CPU: see tests/test_export_slow.py",
        "dpo": "needs preference data; its weights are a LoRA adapter like lora's"}
ADAPTER_WARNING = {"dora": "use_dora", "ia3": "only LoRA", "prefix": "only LoRA", "prompt": "only LoRA",
                   "adapter": "not a peft adapter"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tailored.testing.tiny import write_chat_dataset

    return write_chat_dataset(tmp_path_factory.mktemp("methods-data") / "train.jsonl", n=12)


@pytest.mark.parametrize("method", [m for m in method_names() if m not in SKIP])
def test_method_exports(method, data, tiny_model_dir, tmp_path):
    import tailored

    extra = {"num_virtual_tokens": 4} if method in ("prefix", "prompt") else {}
    run = tailored.train(data=str(data), model=str(tiny_model_dir), method=method, max_steps=1,
                         learning_rate_multiplier=20, output=str(tmp_path / "run"), **extra).run_dir
    if get_method(method).mergeable:
        from transformers import AutoModelForCausalLM

        reference = tailored.load(run).model
        merged = AutoModelForCausalLM.from_pretrained(str(export_run(run, tmp_path / "merged").out_dir))
        gguf = export_run(run, tmp_path / "gguf", format="gguf", dtype="f32")
        from_gguf = AutoModelForCausalLM.from_pretrained(str(gguf.out_dir), gguf_file=gguf.main_file.name)
        ids = torch.tensor([[1, 40, 50, 60, 70, 80, 2]])
        with torch.no_grad():
            want = reference(ids).logits
            assert (want - merged(ids).logits).abs().max().item() < 1e-4
            assert (want - from_gguf(ids).logits).abs().max().item() < 1e-4
    else:
        for fmt in ("merged", "gguf"):
            with pytest.raises(ExportError) as err:
                export_run(run, tmp_path / fmt, format=fmt)
            assert "--format adapter" in (err.value.hint or "")
    if method == "full":
        with pytest.raises(ExportError, match="no adapter"):
            export_run(run, tmp_path / "adapter", format="adapter")
        return
    result = export_run(run, tmp_path / "adapter", format="adapter")
    expected = ADAPTER_WARNING.get(method)
    if expected:
        assert any(expected in w for w in result.warnings), result.warnings
    else:
        assert result.warnings == []
