"""The one generation engine of serve, chat and eval, and its per-row logits hooks.

``core`` (continuous batching: the step loop, chunked prefill, fair admission between adapters),
``kv`` (the running batch's KV tensors), ``prefix`` (the prefix cache), ``lora`` (per-row LoRA on a
plain base), ``sampling`` (settings, rows, NaN-safe sampling), ``text`` (incremental text, stops).

Hooks: a hook sees one row's logits at each decode step and the token that was picked
(:class:`~tailored.engine.hooks.RowHook`): ``process(logits)`` may change the row in place (a
constraint masks the tokens its grammar forbids; the logprob recorder reads the model's distribution
before anyone changes it), ``accept(token)`` advances it. The step engine (and the static loop of
``serve/decode.py``) call them per row through :func:`~tailored.engine.sampling.advance`; HF
``generate`` gets them through :class:`~tailored.engine.hooks.HooksProcessor`.
"""
