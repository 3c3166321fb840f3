"""GPU check (a CUDA machine): structured outputs and logprobs through both engines, built-in and vLLM.

Serves the embedded model with ``--engine builtin`` and, when vLLM is installed, ``--engine vllm``;
asks each (strict openai SDK) for a JSON-schema answer (nested object, enums), a guided choice and
logprobs; prints one line per check and exits non-zero when one fails. vLLM missing is reported as
"skipped", never as passed.

    python scripts/gpu_check_structured.py
"""

from __future__ import annotations

import importlib.util
import json
import sys

SCHEMA = {"type": "object", "properties": {
    "category": {"enum": ["billing", "shipping", "technical"]}, "urgency": {"enum": ["low", "normal", "high"]},
    "customer": {"type": "object", "properties": {"vip": {"type": "boolean"}}, "required": ["vip"],
                 "additionalProperties": False}},
    "required": ["category", "urgency", "customer"], "additionalProperties": False}


def check(engine: str) -> list[tuple[str, bool, str]]:
    import jsonschema
    import openai

    from tailored.serve.server import start

    srv = start(base="smollm2", engine=engine, api_key="k", device="cuda", max_tokens=128)
    out = []
    try:
        client = openai.OpenAI(base_url=srv.url, api_key="k", max_retries=0, _strict_response_validation=True)
        model = client.models.list().data[0].id
        msgs = [{"role": "user", "content": "Triage: my parcel is late and I am a VIP customer."}]
        fmt = {"type": "json_schema", "json_schema": {"name": "ticket", "schema": SCHEMA, "strict": True}}
        answer = client.chat.completions.create(model=model, messages=msgs, response_format=fmt,
                                                temperature=0.8, seed=1, n=4, max_tokens=96)
        try:
            for choice in answer.choices:
                jsonschema.validate(json.loads(choice.message.content or ""), SCHEMA)
            out.append(("json_schema", True, answer.choices[0].message.content or ""))
        except Exception as exc:  # noqa: BLE001 - reported as a failed check
            out.append(("json_schema", False, str(exc)[:200]))
        picked = client.chat.completions.create(model=model, messages=msgs, max_tokens=8,
                                                extra_body={"guided_choice": ["billing", "shipping"]})
        text = picked.choices[0].message.content
        out.append(("guided_choice", text in ("billing", "shipping"), repr(text)))
        lp = client.chat.completions.create(model=model, messages=msgs, max_tokens=6, temperature=0,
                                            logprobs=True, top_logprobs=3)
        content = lp.choices[0].logprobs.content if lp.choices[0].logprobs else None
        ok = bool(content) and all(len(t.top_logprobs) == 3 for t in content)
        out.append(("logprobs", ok, f"{len(content or [])} tokens"))
    finally:
        srv.stop()
    return out


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("skipped: no CUDA device")
        return 0
    failed = False
    for engine in ("builtin", "vllm"):
        if engine == "vllm" and importlib.util.find_spec("vllm") is None:
            print("vllm: skipped (vllm is not installed)")
            continue
        for name, ok, detail in check(engine):
            failed |= not ok
            print(f"{engine} {name}: {'ok' if ok else 'FAILED'} -- {detail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
