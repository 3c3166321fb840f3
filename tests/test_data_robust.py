"""Nothing lost, nothing crashes: odd but valid lines are read, bad ones refused by line, huge ones in bounded memory."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tailored.cli.main import main
from tailored.data.check import check_file
from tailored.data.clean import clean_file
from tailored.data.readers import read_records
from tailored.data.split import split_file
from tailored.data.stats import compute_stats
from tailored.errors import DataError, TailoredError

REPO = Path(__file__).resolve().parents[1]
# Legal raw inside a JSON string, and written raw by json.dumps(..., ensure_ascii=False); str.splitlines() breaks at each.
SEPARATORS = ("\u2028", "\u2029", "\u0085")
TOPICS = ["passwords", "refunds", "parcels", "invoices", "printers", "holidays", "gardens", "bicycles", "violins", "kettles"]


def conversation(i: int, extra: str = "") -> dict:
    topic = TOPICS[i % len(TOPICS)]
    return {"messages": [{"role": "user", "content": f"Question {i} about {topic}:{extra} what should I know about {topic}?"},
                         {"role": "assistant", "content": f"Answer {i}: {topic} need care{extra} and patience, case {i * 7919}."}]}


def line(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    return path


# ---- 1. lines end at \n only ----------------------------------------------------------------------------------


@pytest.fixture()
def separated(tmp_path: Path) -> Path:
    """30 valid examples, each with U+2028, U+2029 or U+0085 raw inside its strings."""
    return write_lines(tmp_path / "sep.jsonl", [line(conversation(i, f" one{SEPARATORS[i % 3]}two")) for i in range(30)])


def test_unicode_line_separators_inside_strings_do_not_split_lines(separated: Path) -> None:
    report = check_file(separated)
    assert not report.has_errors, report.render()
    assert report.n_lines == 30 and [ex.line for ex in report.examples] == list(range(1, 31))
    assert report.examples[4].messages == conversation(4, f" one{SEPARATORS[1]}two")["messages"]  # content kept exactly
    assert compute_stats(separated).n_examples == 30


def test_clean_and_split_keep_lines_with_unicode_separators(separated: Path, tmp_path: Path) -> None:
    report = clean_file(separated, tmp_path / "clean.jsonl", near_threshold=1.0)
    raw = separated.read_bytes().split(b"\n")[:-1]
    kept = (tmp_path / "clean.jsonl").read_bytes().split(b"\n")[:-1]
    # U+0085 is a C1 control character (usually cp1252 "…" decoded as Latin-1): flagged as such, never "invalid".
    assert {f.reason for f in report.flags} == {"encoding_garbage"} and all("U+0085" in f.detail for f in report.flags)
    assert [f.line for f in report.flags] == list(range(3, 31, 3))
    assert kept == [x for n, x in enumerate(raw, start=1) if n % 3]  # the others, byte for byte
    rows = [json.loads(x) for x in (tmp_path / "clean.removed.jsonl").read_text(encoding="utf-8").split("\n") if x]
    assert rows[0]["record"] == conversation(2, " one\u0085two")

    split = split_file(separated, tmp_path / "split", validation=5, test=5)
    assert split.sizes == {"train": 20, "validation": 5, "test": 5} and split.skipped_invalid == 0
    out = b"".join((tmp_path / "split" / f"{s}.jsonl").read_bytes() for s in ("train", "validation", "test"))
    assert sorted(out.split(b"\n")[:-1]) == sorted(raw)


def test_crlf_bom_and_concatenated_files_are_read(tmp_path: Path) -> None:
    one, two = line(conversation(1)), line(conversation(2))
    path = tmp_path / "dos.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + one.encode() + b"\r\n\r\n" + b"\xef\xbb\xbf" + two.encode() + b"\r\n")
    result = read_records(path)
    assert not result.problems and [ex.line for ex in result.examples] == [1, 3]
    clean_file(path, tmp_path / "out.jsonl", near_threshold=1.0)
    assert (tmp_path / "out.jsonl").read_text(encoding="utf-8") == one + "\n" + two + "\n"


# ---- 2. clear errors, never tracebacks ------------------------------------------------------------------------


def test_missing_files_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.jsonl"
    for call in (lambda: check_file(missing), lambda: clean_file(missing, tmp_path / "o.jsonl"),
                 lambda: split_file(missing, tmp_path / "s"), lambda: compute_stats(missing)):
        with pytest.raises(DataError, match="nope.jsonl: no such file"):
            call()
    for argv in (["data", "clean", str(missing), "-o", str(tmp_path / "o.jsonl")], ["data", "split", str(missing), "-o", str(tmp_path)],
                 ["data", "check", str(missing), "--model", "none"], ["data", "stats", str(missing), "--model", "none"]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert "no such file" in err and "Traceback" not in err, (argv, err)
    (tmp_path / "folder.jsonl").mkdir()
    with pytest.raises(DataError, match="is a folder"):
        check_file(tmp_path / "folder.jsonl")


def test_non_utf8_lines_are_refused_by_line_and_the_rest_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = [line(conversation(i)).encode() for i in range(12)]
    latin1 = line(conversation(99, " café")).encode("latin-1")
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b"\n".join(good[:5] + [latin1] + good[5:]) + b"\n")
    report = check_file(path)
    [problem] = [p for p in report.problems if p.severity == "error"]
    assert (problem.line, problem.category) == (6, "not_utf8") and "0xe9" in problem.message and "UTF-8" in problem.message
    assert len(report.examples) == 12

    clean = clean_file(path, tmp_path / "c.jsonl", near_threshold=1.0)
    assert [(f.line, f.reason) for f in clean.flags] == [(6, "invalid")]
    assert (tmp_path / "c.jsonl").read_bytes() == b"\n".join(good) + b"\n"
    [row] = [json.loads(x) for x in (tmp_path / "c.removed.jsonl").read_text(encoding="utf-8").splitlines()]
    assert row["line"] == 6 and "caf\\xe9" in row["record"]  # the bytes, escaped, not lost
    split = split_file(path, tmp_path / "s", validation=2, test=2)
    assert sum(split.sizes.values()) == 12 and split.skipped_invalid == 1
    assert main(["data", "clean", str(path), "-o", str(tmp_path / "c2.jsonl")]) == 0
    assert main(["data", "check", str(path), "--model", "none"]) == 1
    out = capsys.readouterr()
    assert "line 6" in out.out and "not_utf8" in out.out and "Traceback" not in out.err


def test_utf16_files_are_refused_as_a_whole(tmp_path: Path) -> None:
    path = tmp_path / "utf16.jsonl"
    path.write_text(line(conversation(1)) + "\n", encoding="utf-16")
    with pytest.raises(DataError, match="UTF-16") as err:
        check_file(path)
    assert "UTF-8" in (err.value.hint or "")


# ---- 3. a huge line: a clear error, memory bounded by the limit ------------------------------------------------


def test_a_line_over_the_limit_is_refused_and_the_next_one_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [line(conversation(i)) for i in range(12)]
    rows[3] = line(conversation(3, " " + "long " * 100))
    path = write_lines(tmp_path / "long.jsonl", rows)
    result = read_records(path, max_line_bytes=400)
    [problem] = result.problems
    assert (problem.line, problem.category) == (4, "line_too_long") and "max_line_bytes 400" in problem.message
    assert [ex.line for ex in result.examples] == [n for n in range(1, 13) if n != 4]
    assert main(["data", "check", str(path), "--model", "none", "--max-line-bytes", "400"]) == 1
    assert "line 4" in capsys.readouterr().out
    assert main(["data", "check", str(path), "--model", "none"]) == 0
    clean = clean_file(path, tmp_path / "c.jsonl", near_threshold=1.0, max_line_bytes=400)
    assert [(f.line, f.reason) for f in clean.flags] == [(4, "invalid")]
    assert main(["data", "clean", str(path), "-o", str(tmp_path / "c2.jsonl"), "--max-line-bytes", "400"]) == 0
    assert len((tmp_path / "c2.jsonl").read_text().splitlines()) == 11
    split = split_file(path, tmp_path / "s", validation=1, test=1, max_line_bytes=400)
    assert sum(split.sizes.values()) == 11
    assert compute_stats(path, max_line_bytes=400).n_invalid == 1


# The child's own peak RSS (VmHWM, reset after the imports): ru_maxrss would include the forking parent's.
MEASURE = """
import json, sys
from tailored.data.check import check_file
from tailored.data.clean import clean_file

def peak_mb():
    return next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:")) / 1024

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the high-water mark to the current RSS
before = peak_mb()
report = check_file(sys.argv[1])
clean_file(sys.argv[1], sys.argv[2], near_threshold=1.0)
print(json.dumps({"grew_mb": peak_mb() - before, "peak_mb": peak_mb(), "examples": [e.line for e in report.examples],
                  "problems": [[p.line, p.category, p.message] for p in report.problems if p.severity == "error"]}))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="measures memory through Linux's /proc")
def test_a_60_mb_line_is_read_in_bounded_memory(tmp_path: Path) -> None:
    big = tmp_path / "big.jsonl"
    with open(big, "wb") as f:
        f.writelines(line(conversation(i)).encode() + b"\n" for i in range(6))
        f.write(b'{"messages": [{"role": "user", "content": "' + b"word " * 12_000_000 + b'"}, '
                b'{"role": "assistant", "content": "ok"}]}\n')
        f.writelines(line(conversation(i)).encode() + b"\n" for i in range(6, 12))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", MEASURE, str(big), str(tmp_path / "out.jsonl")], capture_output=True,
                          text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["examples"] == [n for n in range(1, 14) if n != 7]
    [(n, category, message)] = got["problems"]
    assert (n, category) == (7, "line_too_long") and "60,000,0" in message and "max_line_bytes" in message
    assert got["grew_mb"] < 64 and got["peak_mb"] < 400, got  # the old reader: +170 MB to check, +1.2 GB to clean
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 12


# ---- 4. fuzz: garbage among valid lines ------------------------------------------------------------------------


def _random_json(rng: random.Random, depth: int = 0) -> object:
    kinds = ["str", "int", "float", "bool", "null"] + (["list", "dict"] * 2 if depth < 4 else [])
    kind = rng.choice(kinds)
    if kind == "str":
        return rng.choice(["", " ", "user", "assistant", "system", "tool", "text", "hi", "\ud800", "\u0000", "\u2028", "é" * 3])
    if kind == "int":
        return rng.choice([0, 1, 2, -1, 10 ** 30])
    if kind == "float":
        return rng.choice([0.5, 1.0, float("inf"), float("nan"), 1e308])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["messages", "role", "content", "weight", "type", "text", "tool_calls", "name", "tools", "x"]
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def _garbage(rng: random.Random, valid: list[bytes]) -> bytes:
    """One line (no b"\\n") that may or may not be valid; never of another format than chat."""
    base = rng.choice(valid)
    choice = rng.randrange(14)
    if choice == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))).replace(b"\n", b"")
    if choice == 1:
        return base[: rng.randrange(1, len(base))]  # truncated
    if choice == 2:
        deep = rng.choice([100_000, 5_000, 990])
        return rng.choice([b"", b'{"messages": ', b'{"messages": [{"role": "user", "content": "x", "name": ']) + b"[" * deep + b"]" * deep
    if choice == 3:
        return b'{"messages": [{"role": "assistant", "content": "x", "weight": ' + b"9" * rng.choice([5000, 400]) + b"}]}"
    if choice == 4:
        return rng.choice([b"1" * 6000, b"-" + b"1" * 5000 + b"e99999", b"1e999999", b"NaN", b"[Infinity]"])
    if choice == 5:  # lone surrogates, as escapes and as raw (invalid) UTF-8
        return rng.choice([base.replace(b"Answer", b"\\ud800Answer"), base.replace(b"Question", b"\\udfffQ"),
                           base.replace(b"Answer", b"\xed\xa0\x80Answer")])
    if choice == 6:  # NUL bytes, raw (invalid JSON) or escaped (valid)
        return rng.choice([base.replace(b"Answer", b"A\x00nswer"), base.replace(b"Answer", b"A\\u0000nswer"), b"\x00" * 20])
    if choice == 7:
        return b"\xef\xbb\xbf" + base if rng.random() < 0.5 else b"\xff\xfe" + base
    if choice == 8:  # flipped or inserted bytes
        data = bytearray(base)
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data).replace(b"\n", b"")
    if choice == 9:
        return json.dumps({"messages": _random_json(rng, 1)}).encode()
    if choice == 10:
        return json.dumps({"messages": [_random_json(rng, 2) for _ in range(rng.randrange(3))]}).encode()
    if choice == 11:
        return json.dumps({"messages": [{"role": "user", "content": _random_json(rng, 2)},
                                        {"role": "assistant", "content": _random_json(rng, 2), "weight": _random_json(rng, 3)}]}).encode()
    if choice == 12:
        return rng.choice([b"[]", b"{}", b"null", b'"messages"', b"   \t  ", b"\r", b"\x0b\x0c", b"\xe2\x80\xa8"])
    return line(conversation(rng.randrange(1000), " odd \u200f\u0301\U0001f600\u2029 text")).encode()


def test_fuzz_readers_raise_only_our_errors_and_keep_every_valid_line(tmp_path: Path) -> None:
    rng = random.Random(11)
    for round_ in range(30):
        planted = {}
        lines: list[bytes] = []
        valid = [line(conversation(100 * round_ + i, rng.choice(["", " \u2028", " \U0001f600", " \u00e9"]))).encode()
                 for i in range(8)]
        for i, v in enumerate(valid):
            if i:  # the first line is a planted one (it sets the format); garbage between the others
                lines += [_garbage(rng, valid) for _ in range(rng.randrange(4))]
            lines.append(v)
            planted[len(lines)] = json.loads(v)["messages"]
        ending = rng.choice([b"\n", b"\r\n"])
        path = tmp_path / f"fuzz{round_}.jsonl"
        path.write_bytes(ending.join(lines) + rng.choice([ending, b""]))
        try:
            result = read_records(path)
            report = check_file(path)
        except TailoredError as exc:  # allowed by the contract, but none of these files deserves one
            pytest.fail(f"round {round_}: {exc}")
        for got in (result, report):
            by_line = {ex.line: ex for ex in got.examples}
            for n, messages in planted.items():
                assert n in by_line and by_line[n].messages == messages, (round_, n)
            errors = {p.line for p in got.problems if p.line and p.severity == "error"}
            nonblank = {n for n, raw in enumerate(lines, start=1) if raw.strip(b" \t\r\n")}
            assert not errors & set(by_line) and errors | set(by_line) == nonblank, round_  # every line accounted for
        report.render().encode("utf-8")  # printable: no lone surrogate reaches the report
        json.dumps(report.to_dict())
        clean = clean_file(path, tmp_path / f"clean{round_}.jsonl", near_threshold=1.0)
        kept = (tmp_path / f"clean{round_}.jsonl").read_bytes().split(b"\n")
        flags = {f.line: f for f in clean.flags}
        for n in planted:
            assert lines[n - 1].rstrip(b"\r") in kept or flags[n].reason == "exact_duplicate", (round_, n)
        (tmp_path / f"clean{round_}.removed.jsonl").read_text(encoding="utf-8")
        split = split_file(path, tmp_path / f"split{round_}", validation=1, test=1)
        assert sum(split.sizes.values()) == len(result.examples)
        compute_stats(path)
