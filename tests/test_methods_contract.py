"""Every registered method through the whole contract on a tiny model.

build → train (loss goes down) → save → reload → resume (identical to an uninterrupted run) →
generate → merge (merged and unmerged agree) or the stated no-merge path. A method without a row
here fails the suite: adding a method is its file plus one row.
"""

from __future__ import annotations

import importlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import tailored
from tailored.errors import TailoredError
from tailored.methods import get_method, method_names
from tailored.methods.runs import load_run
from tailored.models.load import load_model


@dataclass(frozen=True)
class Row:
    lr: float  # learning-rate multiplier that makes 8 steps on the tiny model visibly learn
    data: str = "chat"  # "chat" or "preference"
    options: tuple[tuple[str, object], ...] = ()
    atol: float = 1e-4  # reload/resume/merge agreement on logits
    requires: str | None = None  # an optional extra's package the method needs (`make test` installs it: missing fails)


ROWS = {
    "lora": Row(lr=20),
    "full": Row(lr=100),
    "dora": Row(lr=20),
    # bitsandbytes' CPU 4-bit kernels are not bit-reproducible: resumed losses agree to 1e-4, logits to ~5e-4
    "qlora": Row(lr=20, atol=2e-3, requires="bitsandbytes"),
    "ia3": Row(lr=10),
    "adapter": Row(lr=10, options=(("adapter_placement", "both"), ("bottleneck_size", 8))),
    "prefix": Row(lr=3),
    "prompt": Row(lr=3),
    "dpo": Row(lr=20, data="preference"),
}


def test_every_registered_method_has_a_row():
    assert set(method_names()) <= set(ROWS), f"add a row to ROWS for {sorted(set(method_names()) - set(ROWS))}"


def _losses(run: Path, split: str) -> list[float]:
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in recs if r["split"] == split]


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        # prompt tuning returns logits for its virtual tokens too; keep the positions of the input
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -ids.shape[1] :].float()


@pytest.fixture()
def data_file(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    from tailored.testing.tiny import write_chat_dataset

    if request.param == "preference":
        import random

        from tailored.testing.tiny import WORDS

        rng = random.Random(0)
        lines = []
        for _ in range(48):
            words = [rng.choice(WORDS[:60]) for _ in range(rng.randint(2, 6))]
            lines.append({"input": {"messages": [{"role": "user", "content": " ".join(words)}]},
                          "preferred_output": [{"role": "assistant", "content": words[0] + " " + words[0]}],
                          "non_preferred_output": [{"role": "assistant", "content": words[-1]}]})
        path = tmp_path / "pref.jsonl"
        path.write_text("".join(json.dumps(x) + "\n" for x in lines))
        return path
    return write_chat_dataset(tmp_path / "train.jsonl", n=48)


@pytest.mark.parametrize(
    "method,data_file", [pytest.param(m, ROWS.get(m, Row(1)).data, id=m) for m in method_names()], indirect=["data_file"]
)
def test_method_contract(method: str, data_file: Path, tiny_model_dir: Path, tmp_path: Path):
    row = ROWS[method]
    if row.requires:
        importlib.import_module(row.requires)  # never a skip: a missing extra is a broken install
    impl = get_method(method)
    settings = dict(data=str(data_file), validation=str(data_file), model=str(tiny_model_dir), method=method,
                    batch_size=8, max_steps=8, save_every=4, eval_every=8, learning_rate_multiplier=row.lr, threads=1,
                    **dict(row.options))

    # build + train: the validation loss goes down
    result = tailored.train(output=str(tmp_path / "run"), **settings)
    run = result.run_dir
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["method"]["name"] == method and manifest["method"]["mergeable"] == impl.mergeable
    val = _losses(run, "validation")
    before = manifest["metrics"].get("initial_validation_loss", val[0])
    assert manifest["metrics"]["validation_loss"] < before - 1e-3, (before, val)
    trainable, total = manifest["parameters"]["trainable"], manifest["parameters"]["total"]
    assert 0 < trainable <= total

    # resume: the same run "killed" after step 4 and resumed reproduces it exactly
    copy = tmp_path / "killed"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "adapter")
    resumed = tailored.train(resume=True, output=str(copy))
    assert resumed.loop.steps == 8
    assert _losses(copy, "train") == pytest.approx(_losses(run, "train"), abs=1e-4)

    # reload: the trained weights change the model, a reload and the resumed run agree with it
    ids = torch.tensor([[5, 17, 42, 9, 77, 3, 120, 11]])
    base = load_model(tiny_model_dir)
    model, _, _ = load_run(run)
    assert (_logits(model, ids) - _logits(base, ids)).abs().max() > 1e-4
    again, _, _ = load_run(copy)
    assert torch.allclose(_logits(model, ids), _logits(again, ids), atol=row.atol)
    ckpt, _, _ = load_run(run, which="step-000004")  # a checkpoint reloads too
    assert not torch.allclose(_logits(ckpt, ids), _logits(model, ids), atol=1e-6)

    # generate through the public loader (the method's own loading path)
    chat = tailored.load(run)
    assert isinstance(chat.chat("the a", max_new_tokens=4), str)

    # merge, or the stated no-merge path
    unmerged, _, _ = load_run(run, for_merge=True)
    if impl.mergeable:
        reference = _logits(unmerged, ids)
        merged = impl.merge(unmerged)
        assert not any("lora" in n or "ia3" in n for n, _ in merged.named_parameters())
        assert torch.allclose(_logits(merged, ids), reference, atol=row.atol)
    else:
        with pytest.raises(TailoredError) as err:
            impl.merge(unmerged)
        assert err.value.hint and "method.load" in err.value.hint
