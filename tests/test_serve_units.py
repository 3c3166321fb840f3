"""Pieces of the server without a server: text streaming with stop strings, model ids, sampling."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tailored.eval.generate import GenerationSettings
from tailored.serve.decode import Row, TextStream, pick_tokens
from tailored.serve.registry import Registry, sanitise


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from tailored.models.load import load_tokenizer

    return load_tokenizer(tiny_model_dir)


def feed(stream: TextStream, ids: list[int], limit: int = 100) -> tuple[list[str], str | None]:
    deltas = []
    for token in ids:
        delta, finish = stream.add(token, limit)
        deltas.append(delta)
        if finish:
            return deltas, finish
    return deltas, None


def test_stop_string_is_never_streamed_even_across_tokens(tokenizer) -> None:
    ids = tokenizer("hello the water stop here please", add_special_tokens=False)["input_ids"]
    deltas, finish = feed(TextStream(tokenizer, set(), ["stop"]), ids)
    assert "".join(deltas) == "hello the water " and finish == "stop"
    assert not any("st" in d for d in deltas)  # a stop string's prefix is held back until it is decided


def test_held_back_prefix_is_released_when_it_is_not_a_stop(tokenizer) -> None:
    text = "the sto and more"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    deltas, finish = feed(TextStream(tokenizer, set(), ["stop"]), ids, limit=len(ids))
    assert "".join(deltas) == text and finish == "length"


def test_stop_token_and_limit(tokenizer) -> None:
    ids = tokenizer("one two three", add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    stream = TextStream(tokenizer, {eos}, [])
    deltas, finish = feed(stream, ids + [eos])
    assert "".join(deltas) == "one two three" and finish == "stop" and stream.count == len(ids) + 1
    deltas, finish = feed(TextStream(tokenizer, {eos}, []), ids, limit=2)
    assert finish == "length" and "".join(deltas) == tokenizer.decode(ids[:2])


def test_partial_utf8_is_held_back(tokenizer) -> None:
    ids = tokenizer("café ok", add_special_tokens=False)["input_ids"]
    deltas, _ = feed(TextStream(tokenizer, set(), []), ids, limit=len(ids))
    assert "".join(deltas) == "café ok" and not any("\ufffd" in d for d in deltas)


def test_sampling_is_greedy_at_zero_and_seeded_otherwise() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 1.9]])
    rows = [Row([1], GenerationSettings(), None, None), Row([1], GenerationSettings(), None, None)]  # type: ignore[arg-type]
    assert pick_tokens(logits, rows) == [1, 0]
    def sampled(seed: int) -> list[int]:
        rows = [Row([1], GenerationSettings(temperature=1.5), None, None, generator=torch.Generator().manual_seed(seed + i))  # type: ignore[arg-type]
                for i in range(2)]
        return [pick_tokens(logits, rows)[1] for _ in range(20)]
    assert sampled(3) == sampled(3)
    assert {0, 2} <= set(sampled(3))  # both near-tied tokens are drawn
    top = [Row([1], GenerationSettings(temperature=1.0, top_p=0.5), None, None, generator=torch.Generator().manual_seed(0))]  # type: ignore[arg-type]
    assert {pick_tokens(logits[:1], top)[0] for _ in range(20)} == {1}  # top_p keeps only the most likely token


def test_model_ids_are_sanitised() -> None:
    assert sanitise("My Run/v2: final") == "my-run-v2-final"
    assert sanitise("meta-llama/Llama-3.1-8B") == "meta-llama-llama-3.1-8b"


def test_unfinished_runs_are_not_listed(tmp_path: Path, tiny_model_dir: Path) -> None:
    run = tmp_path / "runs" / "still-training"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text('{"method": {"name": "lora"}, "base_model": {}}')
    registry = Registry(tiny_model_dir, "tiny", "hash", [tmp_path / "runs"])
    assert [e.id for e in registry.models()] == ["tiny"]


def test_settings_errors_name_the_flag() -> None:
    from tailored.errors import ConfigError
    from tailored.serve.settings import parse_settings

    with pytest.raises(ConfigError, match="--engine"):
        parse_settings(engine="tgi")
    with pytest.raises(ConfigError, match="--queue-size"):
        parse_settings(queue_size=0)


def test_vllm_engine_without_vllm_is_a_clear_error(tiny_model_dir: Path) -> None:
    import importlib.util

    from tailored.errors import ModelError
    from tailored.serve.server import build

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed")
    with pytest.raises(ModelError, match="pip install vllm"):
        build(base=str(tiny_model_dir), engine="vllm")


def test_lora_bank_rows_equal_peft_per_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Row-masked concatenated LoRA gives every row its own adapter's logits, as peft computes them."""
    from peft import LoraConfig, get_peft_model

    from tailored.models.load import load_model
    from tailored.engine.lora import LoraBank

    torch.manual_seed(0)
    peft_model = get_peft_model(load_model(tiny_model_dir), LoraConfig(r=4, target_modules="all-linear",
                                                                       init_lora_weights=False), adapter_name="a")
    peft_model.add_adapter("b", LoraConfig(r=8, lora_alpha=4, use_rslora=True, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False))
    peft_model.save_pretrained(str(tmp_path / "saved"), selected_adapters=["a", "b"])
    peft_model.eval()
    ids = torch.randint(5, 300, (3, 7))
    with torch.no_grad():
        alone = []
        for name in ("a", "b"):
            peft_model.set_adapter(name)
            alone.append(peft_model(input_ids=ids).logits)
        with peft_model.disable_adapter():
            alone.append(peft_model(input_ids=ids).logits)
        base = load_model(tiny_model_dir).eval()
        bank = LoraBank(base)
        bank.load("a", tmp_path / "saved" / "a")
        bank.load("b", tmp_path / "saved" / "b")
        rows = ["a", "b", "__base__"]
        with bank.rows(rows):
            mixed = base(input_ids=ids).logits
        with bank.rows(["b"] * 3):  # one adapter: no mask
            only_b = base(input_ids=ids).logits
        plain = base(input_ids=ids).logits  # hooks removed: the untouched base
    for i in range(3):
        assert torch.allclose(mixed[i], alone[i][i], atol=1e-5), rows[i]
    assert torch.allclose(only_b, alone[1], atol=1e-5) and torch.allclose(plain, alone[2], atol=1e-6)
    assert not torch.allclose(alone[0], alone[1], atol=1e-3)  # the adapters really differ


def test_adapter_and_standalone_caches_drop_the_least_recently_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tailored.serve import models_cache
    from tailored.serve.registry import Entry

    class Bank:
        def __init__(self) -> None:
            self.loaded: list[str] = []

        def load(self, name: str, folder: Path) -> None:
            self.loaded.append(name)

        def unload(self, name: str) -> None:
            self.loaded.remove(name)

    def entry(name: str, kind: str = "adapter") -> Entry:
        return Entry(name, kind, 0, run_dir=tmp_path / name, adapter_name=name)

    bank = Bank()
    adapters = models_cache.ResidentAdapters(bank, capacity=2)  # type: ignore[arg-type]
    for name in ("a", "b", "c"):
        adapters.ensure(entry(name), keep={name})
    assert bank.loaded == ["b", "c"]
    adapters.ensure(entry("b"), keep={"b"})  # used again: c is now the oldest
    adapters.ensure(entry("d"), keep={"d"})
    assert bank.loaded == ["b", "d"]
    for name in ("e", "f"):  # a batch's own adapters stay, beyond the capacity if need be
        adapters.ensure(entry(name), keep={"b", "d", "e", "f"})
    assert bank.loaded == ["b", "d", "e", "f"]

    loads: list[str] = []

    def load_run(run_dir: Path, device: str, which: str = "final", merged: bool = False) -> tuple[None, None, None]:
        loads.append(run_dir.name)
        return None, None, None

    monkeypatch.setattr(models_cache, "load_run", load_run)
    monkeypatch.setattr(models_cache, "run_neighbours", lambda run, manifest: None)  # no run folder behind these
    monkeypatch.setattr(models_cache, "ChatModel", lambda model, tok, manifest, name, neighbours: name)
    standalone = models_cache.StandaloneModels(capacity=2, device="cpu")
    for name in ("x", "y", "x", "z", "x", "y"):
        assert standalone.get(entry(name, "standalone")) == name  # type: ignore[comparison-overlap]
    assert loads == ["x", "y", "z", "y"]  # x stayed (used again before z came); y was dropped for z
