"""Per-row logits hooks for decode steps: structured-output constraints and logprobs.

A hook sees one row's logits at each decode step and the token that was picked (:class:`RowHook`):
``process(logits)`` may change the row in place (a constraint masks the tokens its grammar forbids;
the logprob recorder reads the model's distribution before anyone changes it), ``accept(token)``
advances it. The serve decode loop (``serve/decode.py``) calls them per row; HF ``generate`` gets
them through :class:`~tailored.engine.hooks.HooksProcessor`.
"""
