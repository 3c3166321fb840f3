"""Stop tokens: the ids generation must stop on, so a trained or exported model never runs past its answer.

A model that "never stops" almost always lost its end-of-turn token: the tokenizer's ``eos_token``
is ``<|endoftext|>`` while the chat template closes assistant turns with ``<|im_end|>`` (or
``<|eot_id|>``, ``<end_of_turn>`` ...), and the server only stops on the former. The end-of-turn token
is read off the template itself, by rendering an assistant turn and looking at what follows it.
Training records the ids in the manifest; chat, eval, serve and export all call :func:`stop_token_ids`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

_KNOWN_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "</s>", "<|endoftext|>")
_PROBE = "TAILOREDPROBEANSWER"


def special_ids(tokenizer: Any) -> set[int]:
    """Ids of every special token (bos/eos/pad/unk and added tokens marked special)."""
    ids = {int(i) for i in tokenizer.all_special_ids}
    for idx, token in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(token, "special", False):
            ids.add(int(idx))
    return ids


def end_of_turn_id(tokenizer: Any, chat_template: str | None) -> int | None:
    """The special token the chat template writes right after an assistant message, or None.

    Args:
        tokenizer: the run's tokenizer.
        chat_template: the template used in training (the manifest's ``chat_template``).
    """
    if not chat_template:
        return None
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}]
    try:
        text = tokenizer.apply_chat_template(messages, chat_template=chat_template, tokenize=False)
    except Exception:  # noqa: BLE001 - templates may insist on a system turn or other roles; then we cannot probe
        return None
    if _PROBE not in text:
        return None
    tail = text[text.rindex(_PROBE) + len(_PROBE):]
    specials = special_ids(tokenizer)
    for token_id in tokenizer(tail, add_special_tokens=False)["input_ids"]:
        if int(token_id) in specials:
            return int(token_id)
        if tokenizer.decode([token_id]).strip():
            return None  # plain text follows the answer: the template has no end-of-turn token
    return None


def stop_token_ids(tokenizer: Any, chat_template: str | None = None, recorded: Iterable[int] = ()) -> list[int]:
    """Token ids that end an assistant turn, sorted.

    Args:
        tokenizer: the run's (or model's) tokenizer.
        chat_template: the template used in training (default: the tokenizer's own).
        recorded: ids known already (a run manifest's ``eos_token_ids``, a generation config's EOS).
    """
    ids = {int(i) for i in recorded}
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    for token in _KNOWN_END_OF_TURN:
        tid = vocab.get(token)
        if tid is not None and tid != tokenizer.unk_token_id:
            ids.add(int(tid))
    eot = end_of_turn_id(tokenizer, chat_template or tokenizer.chat_template)
    if eot is not None:
        ids.add(eot)
    return sorted(ids)
