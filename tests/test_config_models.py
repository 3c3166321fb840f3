"""Settings: one name everywhere, every problem reported; models: resolved or refused clearly."""

from __future__ import annotations

import pytest

from tailored.config import dump_yaml, load_train_config
from tailored.errors import ConfigError, ModelError
from tailored.methods import method_options
from tailored.models.load import load_model
from tailored.models.registry import ModelSource, resolve_model


def test_yaml_cli_and_api_share_names(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: train.jsonl\nlora-r: 4\nepochs: 2\nlearning_rate_multiplier: 0.5\n")
    cfg = load_train_config({"epochs": 3}, yaml_path=path, methods=method_options())
    assert cfg.epochs == 3 and cfg.learning_rate_multiplier == 0.5 and cfg.method_options == {"lora_r": 4}
    again = tmp_path / "again.yaml"
    again.write_text(dump_yaml(cfg))
    assert load_train_config({}, yaml_path=again, methods=method_options()) == cfg


def test_every_problem_is_named(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_train_config({"data": "x", "epoch": 3, "overlength": "cut", "max_seq_length": 2},
                          methods=method_options())
    problems = err.value.problems
    assert any("'epoch'" in p and "did you mean 'epochs'" in p for p in problems)
    assert any(p.startswith("overlength") for p in problems) and any(p.startswith("max_seq_length") for p in problems)


def test_bad_yaml_is_reported(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_train_config({}, yaml_path=path)


def test_model_resolution(tmp_path, monkeypatch):
    assert resolve_model("smollm2").kind == "embedded"
    assert resolve_model(None).kind == "embedded"
    (tmp_path / "nocfg").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(tmp_path / "nocfg")
    with pytest.raises(ModelError, match="no such file"):
        resolve_model(tmp_path / "missing.gguf")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE"):
        resolve_model("someone/some-model")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert resolve_model("someone/some-model").kind == "hub"


def test_relative_model_paths_are_not_hub_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "models" / "foo").mkdir(parents=True)
    (tmp_path / "models" / "foo" / "config.json").write_text("{}")
    assert resolve_model("models/foo") == ModelSource("hf_dir", "foo", str(tmp_path / "models" / "foo"))
    with pytest.raises(ModelError) as err:
        resolve_model("models/bar")
    assert "no local folder models/bar" in err.value.message and "hub" in err.value.message
    for path in ("./bar", "../bar", "models/foo/bar", str(tmp_path / "bar"), "models/bar.gguf"):
        with pytest.raises(ModelError, match="no such file or folder") as err:
            resolve_model(path)
        assert "hub" not in err.value.message, path
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(ModelError, match="is a file"):
        resolve_model("weights.bin")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert resolve_model("someone/some-model").kind == "hub"
    with pytest.raises(ModelError, match="no such file or folder"):
        resolve_model("models/has space")  # not a valid hub id either


def test_pickled_weights_are_refused(tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelError, match="does not load pickled"):
        load_model(folder)


def test_a_failed_conversion_leaves_no_half_cache(tmp_path):
    from tailored.models.load import _convert_gguf

    bogus = tmp_path / "broken.gguf"
    bogus.write_bytes(b"GGUF but not really")
    target = tmp_path / "cache" / "broken"
    with pytest.raises(Exception):
        _convert_gguf(bogus, target)
    assert not target.exists()
    assert list((tmp_path / "cache").iterdir()) == []  # the temporary folder is gone too


def test_an_unknown_method_is_named_first_with_the_closest_one():
    with pytest.raises(ConfigError) as err:
        load_train_config({"data": "x", "method": "lorra", "lora_r": 8}, methods=method_options())
    assert err.value.problems == ["method 'lorra' is not known (did you mean 'lora'?); choose one of: "
                                  + ", ".join(method_options())]  # lora_r is not reported as unknown on top


def test_settings_and_method_options_are_checked_in_one_pass():
    with pytest.raises(ConfigError) as err:
        load_train_config({"data": "x", "method": "lora", "lora_r": 0, "epochs": 0, "bottleneck_size": 3},
                          methods=method_options())
    problems = "\n".join(err.value.problems)
    assert len(err.value.problems) == 3
    assert "lora_r" in problems and "epochs" in problems and "'bottleneck_size'; it belongs to another method" in problems
