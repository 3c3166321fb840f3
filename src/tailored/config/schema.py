"""Configuration schema. Each field's description is its documentation (shown by ``--help``).

Method-specific settings (``lora_r``, ``bottleneck_size``, ...) are declared by each method plug-in
(see :mod:`tailored.methods`) and travel in ``method_options``; in YAML, on the command line and in
the Python API they are written flat, like every other setting.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tailored.config.auto import check_patience

Auto = Literal["auto"]


class TrainConfig(BaseModel):
    """Everything a training run needs; saved resolved (no "auto" left) in every run folder."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    data: str = Field(description="Training data file (JSONL: chat, prompt/completion, alpaca, sharegpt, text).")
    validation: str = Field(
        "auto", description="Validation data file, scored every eval_every steps; auto: hold out a stratified 5-10% of the "
        "training data (at least a few dozen examples, never below what training needs); none: no validation.")
    format: str = Field("auto", description="Data format: auto, chat, prompt_completion, alpaca, sharegpt, text, preference.")
    model: str = Field("smollm2", description="Base model: 'smollm2' (embedded), a local HF folder, a .gguf file, or a hub id.")
    method: str = Field("lora", description="Fine-tuning method (see `tailored methods`).")
    method_options: dict[str, Any] = Field(default_factory=dict, description="Method settings (lora_r, ...), written flat.")
    output: str | None = Field(None, description="Run folder (default: runs/<model>-<method>-<time>).")
    from_run: str | None = Field(None, description="Continue from this finished run's weights (same base, method and template; settings not given are the run's). CLI: --from.")
    mix_old: float = Field(0.0, ge=0.0, lt=1.0, description="With from_run: share of the training set drawn from the parent's training data (against forgetting).")

    epochs: Union[int, Auto] = Field("auto", description="Passes over the data; auto follows OpenAI's rule from the dataset size "
                                           "(3 for most sets), and gives a set under 1,500 examples 4-5 when validation and early "
                                           "stopping guard the run.")
    batch_size: Union[int, Auto] = Field("auto", description="Examples per optimizer step, over all processes.")
    learning_rate_multiplier: Union[float, Auto] = Field("auto", description="Multiplies the method's base learning rate.")
    neighbours: Union[int, Auto] = Field(
        "auto", description="Classification data: list the N training requests most similar to each prompt, with their labels, "
        "in its system message -- in training and wherever the run answers (eval, chat, serve); auto: 4 when the answers "
        "form a label set (and the shipped embeddings are installed), else 0; 0: off.")
    max_steps: int | None = Field(None, description="Stop after this many optimizer steps (overrides epochs).")
    max_seq_length: int = Field(1024, description="Longest example in tokens; see overlength for longer ones.")
    overlength: Literal["drop", "truncate", "error"] = Field("drop", description="What to do with longer examples (always counted and named).")
    batching: Literal["bucket", "pack"] = Field("bucket", description="Length-bucketed batches, or packing without cross-example attention.")
    micro_batch_tokens: int = Field(1024, description="Most padded tokens in one forward pass (lower: less memory; a longer example gets its own pass).")
    warmup_ratio: float = Field(0.05, description="Share of steps with linear warmup.")
    lr_schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="Decay after warmup.")
    weight_decay: float = Field(0.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, description="Gradient clipping norm (0 disables).")
    seed: int = Field(42, description="Seed for shuffling, dropout and initialisation.")

    eval_every: int | None = Field(None, description="Validation every N steps (default: about 5 times per run).")
    save_every: Union[int, Literal["epoch"], None] = Field(
        None, description="Checkpoint every N steps, or at the end of every epoch (default: about 4 times per run).")
    keep_checkpoints: int = Field(2, description="Newest checkpoints kept (the best one is always kept).")
    log_every: int = Field(1, description="Write a metrics.jsonl line every N steps.")
    early_stopping_patience: Union[int, Auto] = Field(
        "auto", description="Stop after N validations without improvement (auto: 2 when there is validation data; 0: never).")
    red_flags: Literal["auto", "full", "curves", "off"] = Field(
        "auto", description="Red-flag check after training: curves (overfitting), full (+ forgetting and mode collapse), "
        "auto (full when it costs little next to the training), off.")

    threads: Union[int, Auto] = Field("auto", description="CPU threads for torch (auto: the cores not busy now, shared among processes; 1 under pytest-xdist/CI).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto picks CUDA when present.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="auto: fp32 on CPU, bf16 on CUDA.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory (activation checkpointing).")

    # Scale-out (docs/distributed.md): how the processes share the model, and how many there are.
    strategy: Literal["ddp", "fsdp", "zero2", "zero3"] = Field(
        "ddp", description="ddp: a full copy per process; fsdp: FSDP2 shards weights, gradients and optimizer states; "
        "zero2: DeepSpeed ZeRO-2 shards gradients and optimizer states; zero3: ZeRO-3 shards all three (zero*: pip install tailored[deepspeed]).")
    nproc: int = Field(1, ge=1, description="Processes per machine; more than 1 (or fsdp/zero*) starts torchrun itself.")
    nnodes: int = Field(1, ge=1, description="Machines in the run; run the same command on each with its --node-rank.")
    node_rank: int = Field(0, ge=0, description="This machine's index, 0 to nnodes-1.")
    master_addr: str = Field("127.0.0.1", description="Address of the machine with node_rank 0 (all machines must reach it).")
    master_port: int = Field(29500, ge=1, le=65535, description="Port on master_addr for the processes to meet.")
    cpu_offload: bool = Field(False, description="fsdp/zero2/zero3 on CUDA: keep sharded weights (fsdp, zero3) and optimizer states in CPU memory.")
    strategy_config: str | None = Field(
        None, description="Your own engine config: a DeepSpeed JSON (zero2/zero3) or an accelerate YAML with fsdp_config (fsdp); "
        "Tailored's settings fill what it leaves out, and a conflict is an error.")

    @field_validator("validation", mode="before")
    @classmethod
    def _validation(cls, v: Any) -> Any:
        return "none" if v is None else v  # a run folder of an older version wrote null for "no validation"

    @field_validator("early_stopping_patience", mode="before")
    @classmethod
    def _patience(cls, v: Any) -> Any:
        return 0 if v is None else check_patience(v)  # null: older run folders' "off"

    @property
    def validation_file(self) -> str | None:
        """The validation file given, or None (``auto``: held out from the training data; ``none``: no validation)."""
        return None if self.validation in ("auto", "none") else self.validation

    @field_validator("epochs", "batch_size")
    @classmethod
    def _positive(cls, v: Any) -> Any:
        if v != "auto" and int(v) < 1:
            raise ValueError("must be 'auto' or a positive integer")
        return v

    @field_validator("learning_rate_multiplier")
    @classmethod
    def _positive_float(cls, v: Any) -> Any:
        if v != "auto" and float(v) <= 0:
            raise ValueError("must be 'auto' or a positive number")
        return v

    @field_validator("max_seq_length", "micro_batch_tokens")
    @classmethod
    def _at_least_8(cls, v: int) -> int:
        if v < 8:
            raise ValueError("must be at least 8")
        return v
