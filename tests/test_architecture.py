"""Dependencies flow one way: errors → config → data → models → methods → train → eval → export → serve | cli.

Every ``import tailored.X`` (at module level or inside a function) must point at the same layer or a
layer to its left. Also: no file loads pickles, and no file enables remote code.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "tailored"
LAYERS = ["errors", "config", "data", "models", "methods", "train", "eval", "export", "serve"]
RANK = {name: i for i, name in enumerate(LAYERS)}
RANK.update({"estimate": RANK["train"], "cli": RANK["serve"], "demo": RANK["serve"] + 1, "testing": RANK["models"]})


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "tailored" or len(parts) < 2:
        return None
    return parts[1]


def imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_imports_flow_one_way():
    problems = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        own = rel.parts[0].removesuffix(".py")
        if own in ("__init__", "__main__"):
            continue
        assert own in RANK, f"{rel}: new top-level module {own!r}: give it a place in LAYERS"
        for line, module in imports(path):
            target = layer_of(module)
            if target is None or target == own or target in ("__init__",):
                continue
            if target in RANK and RANK[target] > RANK[own]:
                problems.append(f"{rel}:{line} imports {module} ({own} may not depend on {target})")
    assert not problems, "\n".join(problems)


def test_no_pickle_loading_or_remote_code():
    problems = []
    for path in sorted(PKG.rglob("*.py")):
        text = path.read_text()
        for bad in ("torch.load(", "pickle.load", "trust_remote_code=True"):
            if bad in text:
                problems.append(f"{path.relative_to(PKG)} uses {bad}")
    assert not problems, "\n".join(problems)
