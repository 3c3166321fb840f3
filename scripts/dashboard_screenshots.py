"""Screenshots of every dashboard page for docs/ (a real server on the embedded model, driven in Debian's chromium).

    .venv/bin/python scripts/dashboard_screenshots.py [--out docs/img] [--steps 12]

Starts a keyless server on 127.0.0.1 (a private $TAILORED_HOME), uploads the bundled triage example
with one broken line, trains a short job on it, opens its report, chats on both sides of the
playground (rating the fine-tune's answer), casts three arena votes, then sends the fine-tune 20
support tickets and 20 cooking questions (logged: the server runs with ``log_requests``) and runs
``tailored drift``'s check on each set, for the runs page's drift view; one PNG per page (and the jobs
page on a narrow screen). Takes a few minutes on a CPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any


DISHES = ["risotto", "lasagne", "pancakes", "ramen", "paella", "curry", "brownies", "falafel", "gnocchi", "chili",
          "sourdough", "tiramisu", "dumplings", "tacos", "goulash", "quiche", "hummus", "biryani", "crepes", "pho"]


def drift_checks(srv: Any, model: str, valid: Path) -> None:
    """Log 20 on-topic tickets and 20 cooking questions to the fine-tune; one drift check of each set."""
    import json
    from concurrent.futures import ThreadPoolExecutor

    import openai

    from tailored.drift.run import check, render

    sdk = openai.OpenAI(base_url=srv.url, api_key="local", max_retries=0)
    tickets = [json.loads(line)["messages"][:-1] for line in valid.read_text().splitlines()[:20]]
    cooking = [[{"role": "user", "content": f"What is the secret to a really good {dish}? I keep getting it wrong."}] for dish in DISHES]
    for batch in (tickets, cooking):
        with ThreadPoolExecutor(8) as pool:
            ids = {c.id for c in pool.map(lambda m: sdk.chat.completions.create(model=model, messages=m, max_tokens=32), batch)}
        records = [r for r in srv.built.traffic.rows(None, model=model) if r["id"] in ids]
        print(render(check(srv.built.registry.resolve(model).run_dir, records)), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="docs/img")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    real = Path(os.environ.get("TAILORED_HOME") or Path.home() / ".cache" / "tailored")
    home = Path(tempfile.mkdtemp(prefix="tailored-shots-"))
    (real / "models").mkdir(parents=True, exist_ok=True)
    (home / "models").symlink_to(real / "models", target_is_directory=True)  # the converted embedded model, reused
    os.environ["TAILORED_HOME"] = str(home)

    from playwright.sync_api import sync_playwright

    from tailored.dashboard import attach
    from tailored.serve.server import Running, build

    examples = resources.files("tailored.examples")
    work = Path(tempfile.mkdtemp())
    train, valid = work / "triage_train.jsonl", work / "triage_validation.jsonl"
    train.write_text(examples.joinpath("triage_train.jsonl").read_text())
    valid.write_text(examples.joinpath("triage_validation.jsonl").read_text())
    broken = work / "triage_broken.jsonl"
    lines = train.read_text().splitlines()
    broken.write_text("\n".join(lines[:40] + ['{"messages": [{"role": "user", "content": "my order never came"}'] + lines[40:]) + "\n")

    srv = Running(attach(build(base="smollm2", port=0, max_tokens=48, log_requests=True)))
    base_url = srv.url[:-3] + "/"
    t0 = time.monotonic()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_context(viewport={"width": 1200, "height": 900}, bypass_csp=True).new_page()
            page.set_default_timeout(900_000)
            page.goto(base_url + "#data")

            def upload(path: Path) -> None:
                page.goto(base_url + "#data")
                page.locator("#upload-file").set_input_files(str(path))
                page.get_by_role("button", name="Upload and check").click()
                page.wait_for_function(f"document.querySelector('#data-title')?.textContent.startsWith('{path.name}')")

            upload(train)
            upload(valid)
            upload(broken)
            page.screenshot(path=out / "dashboard-data.png", full_page=True)
            print(f"data page {time.monotonic() - t0:.0f} s", flush=True)

            page.goto(base_url + "#jobs")
            page.locator("#job-train").select_option(label=next(o for o in page.locator("#job-train option").all_inner_texts() if o.startswith("triage_train")))
            page.locator("#job-valid").select_option(label=next(o for o in page.locator("#job-valid option").all_inner_texts() if o.startswith("triage_validation")))
            page.locator("#job-batch").fill("2")
            page.locator("#job-steps").fill(str(args.steps))
            page.locator("#job-suffix").fill("triage")
            page.get_by_role("button", name="1. Estimate").click()
            page.wait_for_selector("#estimate:not(.hidden)")
            page.get_by_role("button", name="2. Start job").click()
            page.wait_for_function("/^(succeeded|failed|cancelled)/.test(document.querySelector('#job-status').textContent)")
            page.wait_for_timeout(1500)
            page.screenshot(path=out / "dashboard-jobs.png", full_page=True)
            model = page.locator("#job-title").inner_text().split(" → ")[-1]
            print(f"jobs page {time.monotonic() - t0:.0f} s", flush=True)
            narrow = browser.new_context(viewport={"width": 390, "height": 844}, bypass_csp=True).new_page()
            narrow.goto(base_url + "#jobs")
            narrow.locator('#job-table tr[data-job]').first.click()
            narrow.wait_for_selector("#loss-chart svg")
            narrow.screenshot(path=out / "dashboard-jobs-narrow.png", full_page=True)

            page.goto(base_url + "#runs")
            page.locator("#run-table tr", has_text=model).first.get_by_role("button", name="Open report").click()
            page.frame_locator("#run-report").locator("h1").wait_for()
            page.wait_for_timeout(2500)  # the framed report paints after its h1 exists
            page.screenshot(path=out / "dashboard-runs.png", full_page=True)

            page.goto(base_url + "#playground")
            page.locator("#play-model-2").select_option(model)
            page.locator("#play-prompt").fill("My parcel arrived damaged and I want a refund.")
            page.locator("#play-max").fill("40")
            page.get_by_role("button", name="Send to all").click()
            page.wait_for_function("[...document.querySelectorAll('#play-panels .panel')].every(p => p.dataset.done === '1')")
            page.locator("#play-panels .panel").nth(1).get_by_role("button", name="Good").click()
            page.wait_for_function("document.querySelectorAll('#play-panels .feedback')[1].dataset.rating === 'good'")
            page.screenshot(path=out / "dashboard-playground.png", full_page=True)
            print(f"playground {time.monotonic() - t0:.0f} s", flush=True)

            page.goto(base_url + "#arena")
            page.locator("#arena-file").select_option(label=next(o for o in page.locator("#arena-file option").all_inner_texts() if o.startswith("triage_validation")))
            page.locator("#arena-max").fill("32")
            for n, vote in enumerate(("A is better", "B is better", "Tie"), 1):
                page.get_by_role("button", name="New battle").click()
                page.wait_for_function("!document.querySelector('#votes button').disabled")
                page.get_by_role("button", name=vote).click()
                page.wait_for_function(f"document.querySelector('#arena-summary').dataset.votes === '{n}'")
            page.screenshot(path=out / "dashboard-arena.png", full_page=True)
            print(f"arena {time.monotonic() - t0:.0f} s", flush=True)

            drift_checks(srv, model, valid)
            page.goto(base_url + "#runs")
            page.locator("#run-table tr", has_text=model).first.get_by_role("button", name="Drift").click()
            page.wait_for_selector("#drift-verdict[data-checks='2']")
            page.locator("#run-drift").screenshot(path=out / "dashboard-drift.png")
            print(f"drift {time.monotonic() - t0:.0f} s", flush=True)
            browser.close()
    finally:
        srv.stop()
        shutil.rmtree(home, ignore_errors=True)
    for png in sorted(out.glob("dashboard-*.png")):
        print(f"{png} ({png.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
