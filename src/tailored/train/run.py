"""``train()``: read and check the data, load the model, apply the method, run the loop, write the run folder.

This is the one function the CLI, the Python API and (later) the job worker call.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from tailored.config import TrainConfig, dump_yaml, load_train_config
from tailored.config.files import atomic_folder, atomic_write, file_sha256
from tailored.config.load import read_yaml
from tailored.config.manifest import (BaseModelRecord, DataFileRecord, DataRecord, Environment, Manifest, MethodRecord,
                                      ParameterCounts, RunFolder, RunMetrics, versions)
from tailored.data.check import check_file
from tailored.data.stops import stop_token_ids
from tailored.data.tokenize import encode_all
from tailored.errors import CheckpointError, DataError
from tailored.methods import get_method, method_options
from tailored.methods.base import count_parameters, parse_options
from tailored.models.load import content_hash, load_model, load_tokenizer, local_folder
from tailored.models.neighbours import encode_with_neighbours
from tailored.models.registry import resolve_model
from tailored.train.checkpoint import load_checkpoint, remove_leftovers, writing
from tailored.train import lineage
from tailored.train.resume import check_world, load_sharded
from tailored.train.engines import config_record
from tailored.train.launch import launched_settings
from tailored.train.strategy import make_engine, weights_from
from tailored.train.hparams import resolve
from tailored.train.loop import LoopResult, TrainingDiverged, latest_checkpoint, lr_lambda, train_loop
from tailored.train.threads import configure_threads
from tailored.train.validation import HeldOut, hold_out, resolve_patience


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    manifest: Manifest
    loop: LoopResult


def post_train_hooks(say: Callable[..., None] = print) -> list[Callable[[RunResult, TrainConfig], None]]:
    """The checks run after every completed training run: the ``tailored.post_train`` entry points.

    Higher layers provide them so train never imports them (eval's red-flag check is one, declared in
    pyproject.toml). A hook gets (RunResult, TrainConfig); its errors are reported, never raised: a
    finished run is never lost to a failed check.
    """
    from importlib.metadata import entry_points

    hooks: list[Callable[[RunResult, TrainConfig], None]] = []
    for ep in entry_points(group="tailored.post_train"):
        try:
            hook = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plug-in must not stop training
            say(f"warning: post-training check {ep.name} could not be loaded: {exc}")
            continue
        if hook not in hooks:
            hooks.append(hook)
    return hooks


def trainable_model(folder: Path, method: Any, options: Any, *, device: str | torch.device = "cpu",
                    gradient_checkpointing: bool = False) -> torch.nn.Module:
    """The base in ``folder`` loaded as ``method`` needs it (quantized or not) and prepared for training."""
    device = torch.device(device)
    model = load_model(folder, device=device, **method.base_load_kwargs(options, device.type))
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    return method.prepare(model, options)


def _default_output(cfg: TrainConfig) -> str:
    name = resolve_model(cfg.model).name.split("/")[-1]
    return str(Path("runs") / f"{name}-{cfg.method}-{time.strftime('%Y%m%d-%H%M%S')}")


def _resume_config(settings: dict[str, Any], config_file: str | None = None) -> TrainConfig:
    """The run's own settings (its config.yaml), with what ``config_file`` and ``settings`` say now on top.

    What is given again must agree with the run (:func:`_differences` checks it once resolved); a
    setting that is not given keeps the run's value.
    """
    out = settings.get("output")
    if not out or not RunFolder(out).config_file.is_file():
        raise CheckpointError(
            "--resume needs --output pointing at an existing run folder (with config.yaml)",
            hint="pass the run folder printed by the interrupted `tailored train`",
        )
    methods = method_options()
    saved = read_yaml(RunFolder(out).config_file)
    now = read_yaml(config_file) if config_file else {}
    now.update({k.replace("-", "_"): v for k, v in settings.items() if v is not None})
    method = now.get("method", saved.get("method"))
    if method != saved.get("method") and saved.get("method") in methods:  # the run's method options are not the new one's
        saved = {k: v for k, v in saved.items() if k not in methods[saved["method"]].model_fields}
    return load_train_config({**saved, **now, "output": out}, methods=methods)


# What makes a run what it is: resuming with another value would not continue the same run.
_MEANING = ("method", "format", "max_seq_length", "overlength", "batching", "batch_size", "learning_rate_multiplier",
            "warmup_ratio", "lr_schedule", "weight_decay", "max_grad_norm", "seed")
_LENGTH = ("epochs", "max_steps")  # the run's length may change: continue for longer, or stop sooner


def _show(value: Any) -> str:
    return "none" if value is None else str(value)


def _differences(old: Manifest, new: Manifest) -> tuple[list[str], list[str]]:
    """(what differs between the run and a resume of it, in the run's meaning; changes of its length)."""
    refused = []
    if old.base_model.content_hash != new.base_model.content_hash:
        refused.append(f"model: {old.base_model.spec} (weights {old.base_model.content_hash[:12]}) in the run, "
                       f"{new.base_model.spec} (weights {new.base_model.content_hash[:12]}) now")
    for label, was, now in (("data", old.data.train, new.data.train), ("validation", old.data.validation, new.data.validation)):
        if (was and was.sha256) != (now and now.sha256):
            described = [f"{f.path} (sha256 {f.sha256[:12]})" if f else "none" for f in (was, now)]
            refused.append(f"{label}: {described[0]} in the run, {described[1]} now")
    for key in _MEANING:
        if old.config.get(key) != new.config.get(key):
            refused.append(f"{key}: {_show(old.config.get(key))} in the run, {_show(new.config.get(key))} now")
    if old.method.name == new.method.name:
        for key in sorted(set(old.method.options) | set(new.method.options)):
            if old.method.options.get(key) != new.method.options.get(key):
                refused.append(f"{key}: {_show(old.method.options.get(key))} in the run, "
                               f"{_show(new.method.options.get(key))} now")
    length = [f"{key}: {_show(old.config.get(key))} in the run, {_show(new.config.get(key))} now"
              for key in _LENGTH if old.config.get(key) != new.config.get(key)]
    return refused, length


def train(config: TrainConfig | None = None, *, config_file: str | None = None, resume: bool = False, **settings: Any) -> RunResult:
    """Fine-tune a model. Settings are the names of ``tailored train --help`` (``data=``, ``lora_r=`` ...).

    Args:
        config: a ready TrainConfig (settings are ignored then).
        config_file: a YAML file of settings; keyword settings override it.
        resume: continue the run in ``output`` from its newest checkpoint (from step 0 when it has none yet);
            settings given with it must agree with the run's, except its length (epochs, max_steps).

    Returns:
        RunResult with the run folder, final metrics and the manifest.

    Raises:
        DataError: the data has invalid lines (the report lists them) or too few examples.
        ConfigError: a setting is unknown or invalid (all problems are listed).
        CheckpointError: ``resume`` without a usable run folder, or with other data or settings than the run's
            (every difference is listed); a disk that is full or not writable (the path is named, the last
            good checkpoint is kept).
        TrainingDiverged: the loss became NaN or infinite (the step and the last checkpoint are named).
    """
    if config is None:
        if not resume:  # from_run: the parent's model, method and options under what is given
            settings = lineage.inherit(settings, config_file, {n: set(m.model_fields) for n, m in method_options().items()})
        config = (_resume_config(settings, config_file) if resume
                  else load_train_config(settings, yaml_path=config_file, methods=method_options()))
    cfg = config.model_copy(update=launched_settings())  # under torchrun: its processes, nodes and address
    method = get_method(cfg.method)
    options = parse_options(method, cfg.method_options)
    accelerator = make_engine(cfg, method.quantization(options))  # the strategy's engine (checks its settings)
    threads = configure_threads(cfg.threads, accelerator.num_processes) if accelerator.device.type == "cpu" else 0
    main = accelerator.is_main_process
    say = print if main else (lambda *a, **k: None)

    source = resolve_model(cfg.model)
    folder = local_folder(source)
    tokenizer = load_tokenizer(folder)

    parent = lineage.parent_of(cfg)
    run = RunFolder(cfg.output or _default_output(cfg))
    data_cfg = lineage.training_data(cfg, parent, run.path)  # mix_old: the new data with some of the parent's
    report, val_examples, held = _read_data(data_cfg, tokenizer)
    if held is not None:
        say(held.describe(data_cfg.data))
    patience = {"early_stopping_patience": resolve_patience(cfg.early_stopping_patience, bool(val_examples))}
    cfg, data_cfg = cfg.model_copy(update=patience), data_cfg.model_copy(update=patience)
    # A method may train towards another goal than the token loss (DPO's preference pairs): it then encodes,
    # batches and scores the data itself (see tailored.methods.objective). No branching on method names.
    objective = method.objective(options)
    encode = objective.encode if objective is not None else encode_all
    reuse = {} if objective is not None else {"encoded": report.encoded}  # the check already tokenized them
    train_rows, stats = encode(tokenizer, report.examples, max_seq_length=cfg.max_seq_length, overlength=cfg.overlength,
                               **reuse)
    val_rows, val_stats = encode(tokenizer, val_examples, max_seq_length=cfg.max_seq_length, overlength=cfg.overlength)
    near, listed = encode_with_neighbours(cfg, report.examples, val_examples, encode, tokenizer, stats, say)
    if listed is not None:
        train_rows, stats, val_rows, val_stats = listed
    listing = {"neighbours": near.k if near is not None else 0}
    cfg, data_cfg = cfg.model_copy(update=listing), data_cfg.model_copy(update=listing)
    for label, st in (("train", stats), ("validation", val_stats)):
        if (msg := st.summary(cfg.max_seq_length)):
            say(f"note ({label}): {msg}")
    if not train_rows:
        raise DataError("no training example is left after tokenization", hint="raise max_seq_length or use overlength: truncate")

    hp = resolve(n_examples=len(train_rows), epochs=cfg.epochs, batch_size=cfg.batch_size,
                 learning_rate_multiplier=cfg.learning_rate_multiplier, base_learning_rate=method.base_learning_rate,
                 max_steps=cfg.max_steps, warmup_ratio=cfg.warmup_ratio, eval_every=cfg.eval_every,
                 save_every=cfg.save_every, world_size=accelerator.num_processes, model_parameters=_parameters(folder),
                 guarded=bool(val_rows) and cfg.early_stopping_patience > 0)
    run_dir = run.path
    if main and not resume and run.exists():
        raise CheckpointError(f"{run_dir} already holds a run", hint="pass another --output, or --resume to continue it")

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    model = trainable_model(folder, method, options, device=accelerator.device,
                            gradient_checkpointing=cfg.gradient_checkpointing)
    trainable, total = count_parameters(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(hp, cfg.lr_schedule))
    resolved_cfg = cfg.model_copy(update={"epochs": hp.epochs, "batch_size": hp.batch_size,
                                          "learning_rate_multiplier": hp.learning_rate_multiplier,
                                          "output": str(run_dir), "threads": cfg.threads})
    manifest = _manifest(data_cfg, resolved_cfg, source, folder, method, options, hp, tokenizer, report, stats, val_examples,
                         train_rows, val_rows, trainable, total, accelerator, threads, held)

    manifest.neighbours = near.record() if near is not None else None
    if parent is not None:  # checked against the new run; the parent's weights are the start (loaded before sharding)
        manifest.lineage = lineage.adopt(parent, manifest, cfg, lambda p: method.load_state(model, p))
        say(f"continuing from {parent.run.path}" + (f" (mixing in {100 * cfg.mix_old:.0f}% of its data)" if cfg.mix_old else ""))
    start_state: dict[str, Any] = {}
    if resume:
        old = run.read() if run.exists() else None
        if old is not None:
            refused, length = _differences(old, manifest)
            if refused:
                raise CheckpointError(
                    f"{run_dir} was trained with other data or settings; --resume continues a run only as it was:\n"
                    + "\n".join(f"  - {line}" for line in refused),
                    hint="resume without these changes, or start a new run with them (another --output)")
            for line in length:
                say(f"note: the run's length changes ({line}); the learning-rate schedule follows the new length")
            manifest.created = old.created
        if main:
            remove_leftovers(run_dir)  # what a killed write left (never a checkpoint: those are renamed into place)
    ckpt = latest_checkpoint(run_dir) if resume else None
    if ckpt is not None:  # the trained weights go in before the strategy shards the model, the optimizer's after
        check_world(ckpt, accelerator)
        method.load_state(model, ckpt / "weights")
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    manifest.environment.engine_config = accelerator.engine_config

    def save_weights(path: Path, state: Any = None) -> None:
        with weights_from(unwrapped, state):  # state: the full weights gathered from shards (None: unsharded)
            method.save(unwrapped, path)

    if resume and ckpt is None:  # killed before its first checkpoint: nothing to continue but nothing lost either
        say(f"{run_dir} has no checkpoint yet: training it again from step 0")
        if main:
            _truncate_metrics(run.metrics, -1)
    elif ckpt is not None:
        start_state = load_checkpoint(ckpt, load_weights=None, scheduler=scheduler,
                                      load_optimizer=lambda sd: load_sharded(accelerator, optimizer, sd, ckpt))
        say(f"resuming {run_dir} from {ckpt.name}")
        if main:
            _truncate_metrics(run.metrics, int(start_state["step"]))
    if main:
        with writing(run_dir):
            atomic_write(run.config_file, dump_yaml(resolved_cfg))
            with atomic_folder(run.tokenizer) as tmp:
                tokenizer.save_pretrained(str(tmp))
            if near is not None:
                with atomic_folder(run.neighbours) as tmp:
                    near.save(tmp)
            manifest = run.write(manifest)
        say(f"run folder: {run_dir}")
        say(f"model {source.name} · method {method.name} · trainable {trainable:,} of {total:,} parameters "
            f"({100 * trainable / total:.2f}%)")
        say(f"examples {len(train_rows)} · epochs {hp.epochs} · batch size {hp.batch_size} · learning rate "
            f"{hp.learning_rate:.2e} (multiplier {hp.learning_rate_multiplier}) · steps {hp.total_steps} · threads {threads}")
    accelerator.wait_for_everyone()

    try:
        loop = train_loop(accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler,
                          train_rows=train_rows, val_rows=val_rows, cfg=cfg, hp=hp, run_dir=run_dir,
                          pad_id=int(tokenizer.pad_token_id), save_weights=save_weights, start=start_state,
                          objective=objective)
    except (CheckpointError, TrainingDiverged):  # stopped: the manifest says so (when the disk still lets it)
        if main:
            try:
                run.write(manifest.model_copy(update={"status": "interrupted"}))
            except Exception:  # noqa: BLE001 - a full disk: the error being raised says more than this would
                pass
        raise
    initial = loop.initial_val_loss if loop.initial_val_loss is not None else start_state.get("initial_val_loss")
    metrics = {"initial_validation_loss": initial, "train_loss": loop.train_loss, "validation_loss": loop.val_loss, "best_validation_loss": loop.best_val_loss,
               "best_step": loop.best_step, "steps": loop.steps, "seconds": round(loop.seconds, 1),
               "real_tokens": loop.real_tokens, "tokens_per_s": round(loop.real_tokens / max(loop.seconds, 1e-9), 1)}
    manifest = manifest.model_copy(update={
        "status": "interrupted" if loop.interrupted else "completed", "metrics": RunMetrics(**metrics),
        "stopped_early": loop.stopped_early, "best_checkpoint": "best" if loop.best_step else None})
    final_weights = accelerator.full_state_dict(model) if not loop.interrupted else None  # every process gathers
    held = accelerator.reduce(torch.tensor(float(accelerator.state_bytes(model, optimizer)), dtype=torch.float64,
                                           device=accelerator.device),
                              reduction="sum")
    manifest.environment.state_bytes_per_process = int(held.item() / accelerator.num_processes)
    if main:
        with writing(run.final if not loop.interrupted else run.manifest_file):
            if not loop.interrupted:
                with atomic_folder(run.final) as tmp:
                    save_weights(tmp, final_weights)
                    tokenizer.save_pretrained(str(tmp))
            manifest = run.write(manifest)
        if loop.interrupted and loop.checkpointed:
            say(f"interrupted at step {loop.steps}; checkpoint saved. Continue with: tailored train --resume --output {run_dir}")
        elif loop.interrupted:
            say(f"stopped at once during step {loop.steps + 1}; the newest checkpoint in {run_dir / 'checkpoints'} (if any) "
                f"can be continued with: tailored train --resume --output {run_dir}")
    accelerator.wait_for_everyone()
    result = RunResult(run_dir, metrics, manifest, loop)
    if main and not loop.interrupted:
        for hook in post_train_hooks(say):
            try:
                hook(result, cfg)
            except Exception as exc:  # noqa: BLE001 - a check must not lose a finished run
                say(f"warning: post-training check {getattr(hook, '__name__', hook)} failed: {exc}")
    return result


def _parameters(folder: Path) -> int | None:
    """The base model's parameter count from its config.json (for the learning-rate rule), None when unknown."""
    from tailored.models.shapes import shape_of_folder

    try:
        return shape_of_folder(folder).n_params
    except Exception:  # noqa: BLE001 - an unusual config only means no size rule
        return None


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines after ``step`` so a resumed run's log matches an uninterrupted one."""
    import json

    if not path.is_file():
        return
    kept = []
    for line in path.read_text().split("\n"):
        try:
            record = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:  # the last line of a process killed while writing it
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            kept.append(line)
    atomic_write(path, "".join(line + "\n" for line in kept))


def _read_data(cfg: TrainConfig, tokenizer: Any) -> tuple[Any, list[Any], HeldOut | None]:
    """The checked training report, the validation examples and (``validation: auto``) what was held out.

    Invalid data is refused with the report.
    """
    report = check_file(cfg.data, tokenizer=tokenizer, max_seq_length=cfg.max_seq_length, format=cfg.format,
                        validation=cfg.validation)
    if report.has_errors:
        raise DataError(f"{cfg.data}: the data has problems, nothing was trained\n{report.render(limit=20)}",
                        hint=f"run `tailored data check {cfg.data}` for the full report")
    if cfg.validation == "auto":
        held = hold_out(report.examples, seed=cfg.seed)
        examples = report.examples
        report.examples = [examples[i] for i in held.train_index]
        if report.encoded is not None:
            report.encoded = [report.encoded[i] for i in held.train_index]
        return report, [examples[i] for i in held.validation_index], held
    if cfg.validation_file is None:
        return report, [], None
    val_report = check_file(cfg.validation, tokenizer=tokenizer, max_seq_length=cfg.max_seq_length, format=cfg.format,
                            min_examples=1)
    if val_report.has_errors:
        raise DataError(f"{cfg.validation}: the validation data has problems\n{val_report.render(limit=20)}",
                        hint=f"run `tailored data check {cfg.validation}`")
    return report, val_report.examples, None


def _manifest(cfg: TrainConfig, resolved_cfg: TrainConfig, source: Any, folder: Path, method: Any, options: Any, hp: Any,
              tokenizer: Any, report: Any, stats: Any, val_examples: list[Any], train_rows: list[Any], val_rows: list[Any],
              trainable: int, total: int, accelerator: Any, threads: int, held: HeldOut | None = None) -> Manifest:
    """What the run folder is: everything export, eval and serve need, so they never ask again."""
    validation = None
    if held is not None and held.validation_index:
        validation = DataFileRecord(path=str(Path(cfg.data).resolve()), sha256=file_sha256(cfg.data), format=report.format,
                                    examples=len(val_examples), used=len(val_rows), held_out="auto",
                                    stratified_by=held.stratified_by, lines=held.lines)
    elif cfg.validation_file:
        validation = DataFileRecord(path=str(Path(cfg.validation).resolve()), sha256=file_sha256(cfg.validation),
                                    examples=len(val_examples), used=len(val_rows))
    return Manifest(
        base_model=BaseModelRecord(spec=cfg.model, kind=source.kind, name=source.name, path=str(folder),
                                   content_hash=content_hash(folder)),
        method=MethodRecord(name=method.name, options=options.model_dump(), mergeable=method.mergeable),
        hyperparameters=hp.as_dict(),
        config=resolved_cfg.model_dump(),
        data=DataRecord(
            train=DataFileRecord(path=str(Path(cfg.data).resolve()), sha256=file_sha256(cfg.data), format=report.format,
                                 examples=len(report.examples), used=len(train_rows),
                                 skipped_too_long=[line for line, _ in stats.dropped_too_long],
                                 truncated=[line for line, _ in stats.truncated]),
            validation=validation),
        chat_template=tokenizer.chat_template,
        eos_token=tokenizer.eos_token,
        eos_token_ids=stop_token_ids(tokenizer),
        parameters=ParameterCounts(trainable=trainable, total=total),
        environment=Environment(versions=versions(), device=str(accelerator.device), processes=accelerator.num_processes,
                                threads=threads, strategy=cfg.strategy, nodes=cfg.nnodes,
                                engine_config=accelerator.engine_config, strategy_config=config_record(cfg.strategy_config)),
    )
