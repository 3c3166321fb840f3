"""``tailored train --nproc N [--nnodes M --node-rank R --master-addr A]``: torchrun, started by Tailored.

A run needs torchrun when it has more than one process or a sharded strategy (FSDP and ZeRO join a
process group even with one process). Then ``tailored train`` builds the torchrun command that runs
the same ``tailored train`` in each process, prints it (on a cluster, the same command runs on every
node, with that node's ``--node-rank``) and waits for it. Under torchrun nothing is launched again.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from tailored.config.load import read_yaml
from tailored.config.schema import TrainConfig

LAUNCH = ("strategy", "nproc", "nnodes", "node_rank", "master_addr", "master_port")
_SHARDED = ("fsdp", "zero2", "zero3")


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def launch_settings(settings: dict[str, Any], config_file: str | None = None, resume: bool = False) -> dict[str, Any]:
    """The launch settings of a ``tailored train``: flags over the YAML file over the resumed run's config.yaml."""
    merged: dict[str, Any] = {}
    out = settings.get("output")
    if resume and out and (Path(out) / "config.yaml").is_file():
        merged.update(read_yaml(Path(out) / "config.yaml"))
    if config_file:
        merged.update(read_yaml(config_file))
    merged.update({k: v for k, v in settings.items() if v is not None})
    fields = TrainConfig.model_fields
    return {name: merged.get(name, fields[name].default) for name in LAUNCH}


def launched_settings() -> dict[str, Any]:
    """Under torchrun: the launch settings as torchrun ran them (nothing otherwise)."""
    if not under_torchrun():
        return {}
    env = os.environ
    local = int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"]))
    return {"nproc": local, "nnodes": max(1, int(env["WORLD_SIZE"]) // local), "node_rank": int(env.get("GROUP_RANK", 0)),
            "master_addr": env.get("MASTER_ADDR", "127.0.0.1"), "master_port": int(env.get("MASTER_PORT", 29500))}


def needs_launch(launch: dict[str, Any]) -> bool:
    return not under_torchrun() and (int(launch["nproc"]) > 1 or int(launch["nnodes"]) > 1 or launch["strategy"] in _SHARDED)


def _flags(settings: dict[str, Any]) -> list[str]:
    out = []
    for name, value in settings.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else f"--no-{flag[2:]}")
        elif isinstance(value, (list, tuple)):
            out += [flag, ",".join(map(str, value))]
        else:
            out += [flag, str(value)]
    return out


def torchrun_command(settings: dict[str, Any], launch: dict[str, Any], *, config_file: str | None = None,
                     resume: bool = False) -> list[str]:
    """The torchrun command that runs this ``tailored train`` in every process of this node."""
    nnodes = int(launch["nnodes"])
    if nnodes == 1:
        where = ["--standalone"]  # one machine: torchrun picks a free port itself
    else:
        where = [f"--nnodes={nnodes}", f"--node-rank={launch['node_rank']}", f"--master-addr={launch['master_addr']}",
                 f"--master-port={launch['master_port']}"]
    # torchrun's own options have these names: the processes read them back from torchrun's environment
    rest = {k: v for k, v in settings.items() if k not in LAUNCH or k == "strategy"}
    train = ["train", *(["--config", str(config_file)] if config_file else []), *(["--resume"] if resume else []),
             *_flags(rest)]
    return [sys.executable, "-m", "torch.distributed.run", *where, f"--nproc-per-node={launch['nproc']}",
            "-m", "tailored.cli.main", *train]


def check_before_launch(settings: dict[str, Any], config_file: str | None, resume: bool) -> None:
    """Bad settings are reported once, here, rather than by every process torchrun would start."""
    if resume:
        return  # checked against the run by the processes (the same message from each)
    from tailored.config import load_train_config
    from tailored.errors import ConfigError
    from tailored.methods import get_method, method_options
    from tailored.methods.base import parse_options
    from tailored.train.strategy import check_strategy, uses_cuda

    cfg = load_train_config(settings, yaml_path=config_file, methods=method_options())
    method = get_method(cfg.method)
    problems = check_strategy(cfg, method.quantization(parse_options(method, cfg.method_options)), uses_cuda(cfg))
    if problems:
        raise ConfigError(problems, hint="see docs/distributed.md for what each strategy supports")


# torchrun's own report of a failed process: a traceback and log lines that say less than the process did
_AGENT_LOG = re.compile(r"^[EWI]\d{4} [\d:. ]+\d+ .*torch/distributed/elastic/.*$\n?", re.M)


def run_launched(command: list[str], launch: dict[str, Any]) -> int:
    """Print the command (and, for several nodes, what to run on the others), run it, return its exit code.

    The processes' own output passes through as it comes; torchrun's traceback about a process that
    failed is left out (the process has said why), and one line says how it ended.
    """
    print("launching: " + shlex.join(command), flush=True)
    if int(launch["nnodes"]) > 1:
        print(f"run the same `tailored train` on each of the {launch['nnodes']} nodes, with its own --node-rank "
              f"(0 to {int(launch['nnodes']) - 1}); node 0 is {launch['master_addr']}:{launch['master_port']}", flush=True)
    # Ctrl-C: torchrun passes it on to the training processes, which stop after their step with a checkpoint
    proc = subprocess.Popen(command, stderr=subprocess.PIPE)
    quiet = interrupted = False
    while True:
        try:
            assert proc.stderr is not None
            while chunk := proc.stderr.read1(65536):  # type: ignore[attr-defined]
                text = _AGENT_LOG.sub("", chunk.decode(errors="replace"))
                if not quiet and "Traceback (most recent call last)" in text:
                    text, quiet = text.split("Traceback (most recent call last)")[0], True
                if not quiet:
                    sys.stderr.write(text)
                    sys.stderr.flush()
            code = proc.wait()
            break
        except KeyboardInterrupt:  # wait for the processes' checkpoint
            interrupted = True
    if interrupted:
        return 130  # the processes said where they stopped and how to resume
    if code != 0:
        print(f"error: training stopped: a process of the run exited with code {code} (its message is above)",
              file=sys.stderr)
    return code


