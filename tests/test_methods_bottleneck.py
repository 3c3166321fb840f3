"""Our own bottleneck adapters: start as the identity, sit where asked, save/load exactly, generate with a cache."""

from __future__ import annotations

import json

import pytest
import torch

from tailored.errors import CheckpointError, TailoredError
from tailored.methods import bottleneck, get_method
from tailored.models.load import load_model

IDS = torch.tensor([[3, 14, 15, 92, 65, 35, 89, 79]])


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


@pytest.mark.parametrize("placement,per_layer", [("mlp", 1), ("attention", 1), ("both", 2)])
def test_fresh_adapters_are_the_identity_and_sit_where_asked(tiny_model_dir, placement, per_layer):
    method = get_method("adapter")
    base = load_model(tiny_model_dir)
    reference = _logits(base)
    model = method.prepare(base, method.Options(bottleneck_size=4, adapter_placement=placement))
    assert torch.equal(_logits(model), reference)  # up-projection starts at zero
    layers = len(bottleneck.decoder_layers(model))
    names = [n for n, _ in model.named_modules() if n.endswith(bottleneck.ATTR)]
    assert len(names) == per_layer * layers
    at_mlp = sum(".mlp." in n for n in names)
    at_attention = sum(".self_attn." in n for n in names)
    assert (at_mlp, at_attention) == {"mlp": (layers, 0), "attention": (0, layers), "both": (layers, layers)}[placement]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(bottleneck.ATTR in n for n in trainable)
    hidden = model.config.hidden_size
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == len(names) * (2 * hidden * 4 + 4 + hidden)


def test_adapters_change_the_output_once_trained_and_reload_exactly(tiny_model_dir, tmp_path):
    method = get_method("adapter")
    model = method.prepare(load_model(tiny_model_dir), method.Options(bottleneck_size=4, adapter_placement="both"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.normal_(0, 0.3)
    trained = _logits(model)
    assert not torch.allclose(trained, _logits(load_model(tiny_model_dir)), atol=1e-3)
    method.save(model, tmp_path / "a")
    config = json.loads((tmp_path / "a" / bottleneck.CONFIG_FILE).read_text())
    assert config["placement"] == "both" and config["bottleneck_size"] == 4 and config["n_adapters"] == 4
    from safetensors.torch import load_file

    assert all(bottleneck.ATTR in k for k in load_file(str(tmp_path / "a" / bottleneck.WEIGHTS_FILE)))  # adapter only
    reloaded = method.load(load_model(tiny_model_dir), tmp_path / "a")  # the folder describes itself
    assert torch.equal(_logits(reloaded), trained)
    assert not any(p.requires_grad for p in reloaded.parameters())
    with pytest.raises(TailoredError, match="nonlinear"):
        method.merge(reloaded)


def test_mismatched_checkpoint_is_refused(tiny_model_dir, tmp_path):
    method = get_method("adapter")
    method.save(method.prepare(load_model(tiny_model_dir), method.Options(bottleneck_size=4)), tmp_path / "a")
    other = method.prepare(load_model(tiny_model_dir), method.Options(bottleneck_size=8))
    with pytest.raises(CheckpointError, match="bottleneck_size"):
        method.load_state(other, tmp_path / "a")
    with pytest.raises(CheckpointError, match="missing"):
        method.load(load_model(tiny_model_dir), tmp_path / "nothing")


def test_generation_with_cache_matches_without(tiny_model_dir):
    method = get_method("adapter")
    model = method.prepare(load_model(tiny_model_dir), method.Options(bottleneck_size=4, adapter_placement="both"))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.3)
    model.eval()
    kw = {"input_ids": IDS, "attention_mask": torch.ones_like(IDS), "max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    assert torch.equal(model.generate(**kw, use_cache=True), model.generate(**kw, use_cache=False))
