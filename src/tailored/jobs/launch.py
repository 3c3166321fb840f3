"""How a job's training process is started: the same ``tailored train`` as the command line, through a launcher.

``process`` runs it as one process; ``torchrun`` as ``torchrun --nproc-per-node N`` (data parallel on
one machine, the run identical to one process); ``command`` fills a template that a cluster scheduler
runs, with ``{command}`` replaced by the training command, e.g. ``srun --ntasks=1 --gpus=4 {command}``
(Slurm) or ``ray job submit --working-dir . -- {command}`` (Ray). Whatever the launcher, the job's
progress comes from its run folder, so the service needs nothing from the launcher but the exit code.

A job's ``strategy`` (``tailored.strategy`` in the request: fsdp, zero2, zero3) runs under any launcher:
``torchrun`` gives it ``nproc`` processes; under ``process`` and ``command`` a sharded strategy makes
``tailored train`` start torchrun itself, with one process (see ``tailored.train.launch``).
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tailored.errors import ConfigError


@dataclass(frozen=True)
class Launcher:
    kind: Literal["process", "torchrun", "command"] = "process"
    nproc: int = 1  # processes per job with torchrun
    template: str | None = None  # with command: a shell command holding {command}

    def __post_init__(self) -> None:
        if self.kind not in ("process", "torchrun", "command"):
            raise ConfigError(f"--jobs-launcher {self.kind!r}: expected process, torchrun or command")
        if self.kind == "command" and (not self.template or "{command}" not in self.template):
            raise ConfigError("--jobs-launcher command needs --jobs-command with {command} in it",
                              hint="e.g. --jobs-command 'srun --ntasks=1 {command}'")
        if self.nproc < 1:
            raise ConfigError("--jobs-nproc must be at least 1")

    def command(self, config_file: Path, *, resume: bool, output: Path) -> tuple[list[str] | str, bool]:
        """(the command, whether it runs through a shell) that trains the job described by ``config_file``."""
        train = ["-m", "tailored.cli.main", "train", "--config", str(config_file)]
        if resume:
            train += ["--resume", "--output", str(output)]
        if self.kind == "torchrun":
            return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={self.nproc}",
                    *train], False
        if self.kind == "command":
            assert self.template is not None
            return self.template.replace("{command}", shlex.join([sys.executable, *train])), True
        return [sys.executable, *train], False
