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
RANK.update({"engine": RANK["train"], "estimate": RANK["train"], "compare": RANK["export"], "cli": RANK["serve"] + 1, "jobs": RANK["serve"], "demo": RANK["serve"] + 1, "dashboard": RANK["serve"] + 1, "testing": RANK["models"]})
RANK["drift"] = RANK["export"]


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


# Words that other settings share with method names ("full" red flags, "adapter" export format or entry kind,
# "prompt" role ...): a comparison whose other side names one of these is not about a method.
NOT_METHODS = ("kind", "level", "format", "fmt", "split", "role", "red_flags", "setting", "key")


def _names_a_method(node: ast.AST, source: str) -> bool:
    """Whether a compared expression may hold a method name (anything but the settings above)."""
    if isinstance(node, (ast.Constant, ast.Tuple, ast.List, ast.Set)):
        return False
    text = (ast.get_source_segment(source, node) or "").lower()
    return not any(word in text for word in NOT_METHODS)


def test_no_method_name_comparisons_outside_methods():
    """Only ``methods/`` knows methods by name; everything else asks the contract (serving, merge, quantization ...)."""
    from tailored.methods import method_names

    names = set(method_names())
    problems = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if rel.parts[0] == "methods":
            continue
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.Compare):
                continue
            operands = [node.left, *node.comparators]
            if isinstance(node.ops[0], (ast.In, ast.NotIn)) and isinstance(node.left, ast.Constant):
                continue  # "key" in mapping: a lookup, not a name comparison
            literals = set()
            for op in operands:
                elts = op.elts if isinstance(op, (ast.Tuple, ast.List, ast.Set)) else [op]
                literals |= {e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
            if literals & names and any(_names_a_method(op, source) for op in operands):
                problems.append(f"{rel}:{node.lineno}: {ast.get_source_segment(source, node)}")
    assert not problems, "ask the method contract instead of comparing names:\n" + "\n".join(problems)
