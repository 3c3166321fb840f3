"""Build the registry, engine and app from :class:`ServeSettings`; run it (blocking or in a thread)."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from tailored.serve.settings import ServeSettings, parse_settings


@dataclass
class Built:
    settings: ServeSettings
    registry: Any
    engine: Any
    app: Any
    runner: Any = None  # the fine-tuning jobs' runner (None with --no-jobs)
    traffic: Any = None  # the traffic log (None unless --log-requests)

    def close(self) -> None:
        if self.runner is not None:
            self.runner.stop()
        self.engine.close()
        if self.traffic is not None:
            self.traffic.close()


def _default_base(runs: list[Path]) -> str:
    """The base of the first run found under ``runs`` whose manifest reads, else the embedded model."""
    from tailored.config.manifest import RunFolder, is_run_dir
    from tailored.errors import TailoredError

    for root in runs:
        candidates = [root] if is_run_dir(root) else sorted(p for p in root.iterdir() if is_run_dir(p)) if root.is_dir() else []
        for run in candidates:
            try:
                base = RunFolder(run).read().base_model
            except TailoredError:  # a damaged run: the registry says why; the next run names the base
                continue
            return base.path if (Path(base.path) / "config.json").is_file() else base.spec
    return "smollm2"


def build(settings: ServeSettings | None = None, **overrides: Any) -> Built:
    """Load the base model and everything needed to serve (takes a few seconds).

    Args:
        settings: the settings; ``overrides`` (same names) are applied on top.
    """
    from tailored.models.load import content_hash, local_folder
    from tailored.models.registry import resolve_model
    from tailored.serve.app import check_bind, create_app
    from tailored.serve.keys import load_keys
    from tailored.serve.registry import Registry

    s = parse_settings(**{**(settings or ServeSettings()).model_dump(), **overrides})
    keys = load_keys(s.api_key, s.api_keys)
    check_bind(s.host, keys)
    runs = [Path(r).expanduser() for r in s.runs]
    spec = s.base or _default_base(runs)
    source = resolve_model(spec)
    folder = local_folder(source)
    registry = Registry(folder, source.name, content_hash(folder), runs, base_aliases=(spec, folder.name))
    from tailored.serve.traffic import open_traffic

    traffic = open_traffic(s)  # None unless --log-requests: then nothing is written
    jobs = runner = None
    if s.jobs:  # before the engine loads the model: a bad jobs setting is said at once
        jobs, runner = _jobs(s, registry, spec, folder)
    if s.engine == "vllm":
        from tailored.serve.vllm_engine import VllmEngine

        engine: Any = VllmEngine(registry, s)
    else:
        from tailored.serve.engine import Engine

        engine = Engine(registry, s)
    built = Built(s, registry, engine, create_app(engine, registry, keys, jobs, settings=s, traffic=traffic), runner, traffic)
    if runner is not None:
        runner.start()
    return built


def _jobs(s: ServeSettings, registry: Any, spec: str, folder: Path) -> tuple[Any, Any]:
    """The fine-tuning jobs service under ``$TAILORED_HOME/service`` and its runner; its models join the registry."""
    from tailored.jobs.launch import Launcher
    from tailored.jobs.runner import Runner
    from tailored.jobs.service import BaseModelInfo, open_jobs
    from tailored.models.load import load_tokenizer

    base = BaseModelInfo(registry.base.id, str(folder) if Path(spec).exists() else spec, registry.base.aliases)
    jobs = open_jobs(base)
    registry.sources.append(jobs.models)
    launcher = Launcher(s.jobs_launcher, s.jobs_nproc, s.jobs_command)  # type: ignore[arg-type]
    return jobs, Runner(jobs, concurrency=s.jobs_concurrency, launcher=launcher, base_tokenizer=load_tokenizer(folder))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Running:
    """A uvicorn server in a background thread (tests, benchmarks, notebooks)."""

    def __init__(self, built: Built) -> None:
        import uvicorn

        self.built = built
        port = built.settings.port or free_port(built.settings.host)
        self.url = f"http://{built.settings.host}:{port}/v1"
        # log_config=None: uvicorn's own config goes through dictConfig, which closes every handler the host process
        # had (a notebook's, an app's, pytest's capture); its loggers still get the level and reach the host's handlers.
        config = uvicorn.Config(built.app, host=built.settings.host, port=port, log_level="warning", log_config=None,
                                lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="tailored-uvicorn", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.url}")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.built.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(settings: ServeSettings | None = None, **overrides: Any) -> Running:
    """Build and start a server in a background thread; ``.url`` is the base URL for the openai client.

    Unless a port is given, any free port is used.
    """
    if settings is None:
        overrides.setdefault("port", 0)
    return Running(build(settings, **overrides))


def startup_lines(built: Built) -> list[str]:
    """What ``tailored serve`` prints on start: the models served, then the run folders that are not, and why."""
    s, registry = built.settings, built.registry
    models = registry.models()
    lines = [f"serving {len(models)} model(s) on http://{s.host}:{s.port}/v1"]
    lines += [f"  {e.id}  ({e.kind}{', ' + e.run_dir.name if e.run_dir else ''})" for e in models]
    unavailable = registry.unavailable()
    if unavailable:
        lines.append(f"not serving {len(unavailable)} run folder(s):")
        lines += [f"  {u.run}: {u.reason}" for u in unavailable]
    return lines


def serve_forever(settings: ServeSettings, compose: Any = None) -> None:
    """Build and run until Ctrl-C (what ``tailored serve`` does); ``compose(built)`` adds to the app first."""
    import uvicorn

    built = build(settings)
    if compose is not None:
        compose(built)
    s = built.settings
    print("\n".join(startup_lines(built)), flush=True)
    try:
        uvicorn.run(built.app, host=s.host, port=s.port, log_level="warning", lifespan="off")
    finally:
        built.close()
