"""The request's settings as vLLM's ``SamplingParams``, and vLLM's logprobs as OpenAI's (``--engine vllm``).

Structured outputs: vLLM >= 0.10.2 takes ``structured_outputs=StructuredOutputsParams(json=, regex=,
choice=, json_object=)`` (the only form since 0.12, which removed ``guided_*``); older versions take
``guided_decoding=GuidedDecodingParams(...)`` with the same fields. vLLM's own default backend is
xgrammar, the engine the built-in server uses. Logprobs: ``SamplingParams(logprobs=k)`` returns, per
generated token, a dict ``{token_id: Logprob(logprob, rank, decoded_token)}`` holding the chosen token
and the ``k`` most likely ones, computed from the model's raw output (vLLM's default
``logprobs_mode``), as the built-in engine reports them.
"""

from __future__ import annotations

from typing import Any

from tailored.engine.constraints import Structure
from tailored.engine.logprobs import TokenLogprob, openai_entries


def structure_params(api: Any, structure: Structure | None) -> dict[str, Any]:
    """The ``SamplingParams`` keyword for ``structure`` in the vLLM at hand ({} for free text)."""
    if structure is None:
        return {}
    fields: dict[str, Any] = {
        "json_object": {"json_object": True},
        "json_schema": {"json": structure.value},
        "regex": {"regex": structure.value},
        "choice": {"choice": list(structure.value)},
    }[structure.kind]
    if getattr(api, "StructuredOutputsParams", None) is not None:
        return {"structured_outputs": api.StructuredOutputsParams(**fields)}
    return {"guided_decoding": api.GuidedDecodingParams(**fields)}


def sampling_params(api: Any, req: Any) -> Any:
    """vLLM's ``SamplingParams`` for a prepared :class:`~tailored.serve.request.GenRequest`."""
    s = req.sampling
    return api.SamplingParams(n=req.n, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_new_tokens,
                              stop=s.stop or None, seed=s.seed, stop_token_ids=list(req.chat.stop_ids),
                              ignore_eos=s.ignore_eos, logprobs=s.top_logprobs if s.logprobs else None,
                              **structure_params(api, s.constraint))


def new_logprobs(output: Any, start: int, top: int, tokenizer: Any, stop_ids: set[int]) -> list[dict[str, Any]]:
    """OpenAI's logprob entries for ``output.token_ids[start:]`` (stop tokens left out, as the built-in engine)."""
    per_token = getattr(output, "logprobs", None) or []
    entries = []
    for j in range(start, min(len(output.token_ids), len(per_token))):
        token, options = int(output.token_ids[j]), per_token[j] or {}
        if token in stop_ids:
            continue
        chosen = options.get(token)
        ranked = sorted(((int(t), lp) for t, lp in options.items() if getattr(lp, "rank", 0) and lp.rank <= top),
                        key=lambda item: item[1].rank)
        entries.append(TokenLogprob(token, float(chosen.logprob) if chosen is not None else -9999.0,
                                    [(t, float(lp.logprob)) for t, lp in ranked]))
    return openai_entries(tokenizer, entries)
