"""Shared fixtures: tiny in-memory models (fast), the embedded model (slow), the shared datasets (skip if absent)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _private_home() -> None:
    """Tests never see the user's state (jobs, eval caches): a fresh ``$TAILORED_HOME`` for each test process.

    Its ``models/`` is the user's model cache, so the embedded model is converted once per machine.
    """
    import atexit
    import shutil
    import tempfile

    real = Path(os.environ.get("TAILORED_HOME") or Path.home() / ".cache" / "tailored")
    (real / "models").mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="tailored-test-home-"))
    (home / "models").symlink_to(real / "models", target_is_directory=True)
    os.environ["TAILORED_HOME"] = str(home)
    atexit.register(shutil.rmtree, home, ignore_errors=True)


_private_home()

import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("TAILORED_TEST_THREADS", "1")))

from tailored.cli.common import quiet  # noqa: E402

quiet()

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``make test`` runs ``--dist loadgroup``: a module marked ``xdist_group`` runs on one worker, its fixtures built once.

    pytest-xdist 3.8 groups by appending ``@group`` to ``item._nodeid``, which pytest 9 no longer reads
    (the id lives in ``item._id``): without this, the group is silently ignored and each worker builds
    the module's server again.
    """
    if not getattr(config.option, "loadgroup", False):
        return
    from _pytest.nodeid import NodeId

    for item in items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")})
        if names and "@" not in item.nodeid and isinstance(getattr(item, "_id", None), NodeId):
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(names)}")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with a ChatML byte-level BPE tokenizer, saved as a model folder."""
    from tailored.testing.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_zephyr_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same, with a Zephyr-style template (EOS closes assistant turns)."""
    from tailored.testing.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tinyz") / "model", template="zephyr")


@pytest.fixture()
def chat_file(tmp_path: Path) -> Path:
    from tailored.testing.tiny import write_chat_dataset

    return write_chat_dataset(tmp_path / "train.jsonl", n=48)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded SmolLM2 as a safetensors folder (converted once into $TAILORED_HOME)."""
    from tailored.models.load import local_folder

    return local_folder("smollm2")


@pytest.fixture(scope="session")
def smol_run(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two LoRA steps on the embedded model (short sequences: for tests about export and loading, not learning)."""
    import tailored

    root = tmp_path_factory.mktemp("smol-run")
    rows = [{"messages": [{"role": "user", "content": f"Say the number {i}."},
                          {"role": "assistant", "content": f"The number is {i}."}]} for i in range(12)]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tailored.train(data=str(root / "train.jsonl"), model="smollm2", max_steps=2, batch_size=4, max_seq_length=64,
                          learning_rate_multiplier=5, red_flags="off", output=str(root / "run")).run_dir


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory):
    """A private $TAILORED_HOME for a module, so cached results (eval cache) never leak between runs."""
    old = os.environ.get("TAILORED_HOME")
    os.environ["TAILORED_HOME"] = str(tmp_path_factory.mktemp("home"))
    yield
    if old is None:
        os.environ.pop("TAILORED_HOME", None)
    else:
        os.environ["TAILORED_HOME"] = old


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (present in CI and dev sessions, absent in a user's fresh clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA
