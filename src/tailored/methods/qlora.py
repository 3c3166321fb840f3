"""QLoRA: LoRA on a base quantized to 4-bit NF4 (or 8-bit) with bitsandbytes; merges go into an fp copy.

bitsandbytes ships a CPU backend, so the same code path serves CPU and CUDA. On CPU quantization only
buys memory (dequantising on the fly costs about what it saves). Merging LoRA into *quantized*
weights re-quantizes them and visibly damages the model, so :meth:`merge` refuses a quantized base:
merges use an unquantized copy (``load_run(..., for_merge=True)``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, Field, field_validator

from tailored.errors import ModelError, TailoredError
from tailored.methods.base import Footprint, Serving, register
from tailored.methods.lora import LoraOptions, lora_config, lora_footprint
from tailored.methods.peft_common import PeftMethod
from tailored.models.shapes import ModelShape

_QUANTIZED_LAYERS = ("Linear4bit", "Linear8bitLt", "Params4bit", "Int8Params")


class QloraOptions(LoraOptions):
    quant_bits: int = Field(4, description="Bits per base weight: 4 (NF4/FP4) or 8 (LLM.int8).")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type; NF4 suits normally distributed weights.")
    double_quant: bool = Field(True, description="Also quantize the 4-bit block scales (saves ~0.4 bit per weight).")

    @field_validator("quant_bits")
    @classmethod
    def _bits(cls, v: int) -> int:
        if v not in (4, 8):
            raise ValueError("must be 4 or 8")
        return v


def stored_bits(options: QloraOptions) -> float:
    """Bits per quantized weight, block scales included (QLoRA paper, §2).

    NF4/FP4: 4 bits plus one fp32 absmax per 64 weights (0.5 bit); double quantization stores those
    scales in 8 bits with one fp32 scale per 256 of them (0.127 bit). LLM.int8: 8 bits (its per-row
    scales are negligible).
    """
    if options.quant_bits == 8:
        return 8.0
    return 4 + (8 / 64 + 32 / (64 * 256) if options.double_quant else 32 / 64)


def is_quantized(model: torch.nn.Module) -> bool:
    """Whether any layer of ``model`` holds bitsandbytes-quantized weights."""
    return any(type(m).__name__ in _QUANTIZED_LAYERS for m in model.modules())


def keep_trainable_layout(model: torch.nn.Module) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference while the model trains.

    On CPUs with AVX512-BF16, ``Linear4bit`` repacks its weight in place the first time it runs in eval
    mode without gradients (a validation pass, say). From then on it multiplies through a kernel with
    no autograd formula, so gradients stop flowing through the frozen base to earlier layers and the
    LoRA of all but the last layers learns from a wrong gradient (bitsandbytes only warns). Training
    models keep the trainable layout; inference-only loads still get the fast one.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


class Qlora(PeftMethod):
    name: ClassVar[str] = "qlora"
    summary: ClassVar[str] = "LoRA matrices on a base quantized to 4-bit NF4 (bitsandbytes)"
    when: ClassVar[str] = "the base does not fit in memory in 16/32-bit; not faster on CPU, only smaller"
    base_learning_rate: ClassVar[float] = 2e-4
    Options: ClassVar[type[BaseModel]] = QloraOptions

    # Mergeable into an unquantized copy of the base, never into the quantized one (see merge).

    def quantization(self, options: BaseModel) -> str | None:
        return "8-bit" if options.quant_bits == 8 else f"4-bit {options.quant_type}"  # type: ignore[attr-defined]

    def serving(self, options: BaseModel) -> Serving:
        return Serving("standalone", "served as trained: alone, on its quantized base")

    def footprint(self, shape: ModelShape, options: BaseModel) -> Footprint:
        return lora_footprint(shape, options, quantized_linear_bits=round(stored_bits(options), 3))  # type: ignore[arg-type]

    def base_load_kwargs(self, options: BaseModel, device: str) -> dict[str, Any]:
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except ImportError as exc:
            raise ModelError("qlora needs the bitsandbytes package", hint="pip install bitsandbytes") from exc
        if options.quant_bits == 8:  # type: ignore[attr-defined]
            return {"quantization": BitsAndBytesConfig(load_in_8bit=True)}
        compute = torch.bfloat16 if device == "cuda" else torch.float32
        # on CUDA the packed 4-bit weights are stored as bf16 (like the rest of the model), so that FSDP and
        # ZeRO-3 can shard them with the other weights (--strategy fsdp|zero3); one device trains the same
        storage = {"bnb_4bit_quant_storage": torch.bfloat16} if device == "cuda" else {}
        return {"quantization": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=options.quant_type,  # type: ignore[attr-defined]
            bnb_4bit_use_double_quant=options.double_quant, bnb_4bit_compute_dtype=compute, **storage)}  # type: ignore[attr-defined]

    def prepare(self, model: torch.nn.Module, options: BaseModel) -> torch.nn.Module:
        from peft import get_peft_model, prepare_model_for_kbit_training

        keep_trainable_layout(model)
        if next(model.parameters()).device.type == "cuda":
            # Upcasts the remaining half-precision weights (norms, embeddings) to fp32 for stable training.
            # On CPU everything outside the quantized layers is fp32 already, so it would only add its
            # gradient-checkpointing side effects there.
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return get_peft_model(model, self.peft_config(options))

    def peft_config(self, options: BaseModel) -> Any:
        return lora_config(options)  # type: ignore[arg-type]

    def merge(self, model: torch.nn.Module) -> torch.nn.Module:
        if is_quantized(model):
            raise TailoredError(
                "refusing to merge LoRA into a quantized base: the weights would be re-quantized and the model "
                "visibly damaged (logits change by tens on SmolLM2)",
                hint="load the run with load_run(run, for_merge=True), which uses an unquantized copy of the base",
            )
        return model.merge_and_unload()


register(Qlora())
