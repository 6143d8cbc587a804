"""Load a Llama checkpoint (HF-style folder or GGUF file, or random weights) for a kernel
backend, optionally quantizing its linear layers to FP8 afterwards."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import torch

import kernels
from engine.model.checkpoint import LoadedModel, resolve_model_path
from engine.model.dummy import load_dummy
from engine.model.fp8 import LOAD_TIME_BLOCK, Fp8Linear, quantize_linears
from engine.model.hf_loader import load_hf_folder
from engine.model.int8 import quantize_model_int8

if TYPE_CHECKING:
    from engine.parallel.comm import TPComm

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"


def load_model(
    model: str | Path, dtype: torch.dtype, device: torch.device,
    ops: SimpleNamespace | None = None, *, quantization: str | None = None,
    load_format: str = "auto", comm: TPComm | None = None,
) -> LoadedModel:
    """Load a checkpoint (or random weights with load_format="dummy") for `ops`' kernels.

    quantization="fp8" turns the decoder's linear layers into FP8 ones after loading;
    FP8 checkpoints are FP8 already. "int8" (CPU only) turns them and the LM head into
    int8 ones; it is the default on the CPU for GGUF files with 4/5/8-bit tensors, which
    "none" overrides (float weights in `dtype`).

    With `comm` (tensor parallelism) the model is this rank's share, and only that share of
    the weights is read (LoadedModel.config is still the whole model's shape).
    """
    ops = kernels.reference_ops if ops is None else ops
    if load_format == "dummy":
        loaded = load_dummy(model, dtype, device, ops, comm)
    else:
        path = resolve_model_path(model)
        if quantization is None and device.type == "cpu" and _is_low_bit_gguf(path):
            quantization = "int8"
            logger.info("%s holds 4/5/8-bit tensors: loading its weights as int8", path.name)
        loaded = _load_checkpoint(path, dtype, device, ops, comm)
    if quantization == "fp8" and not any(isinstance(m, Fp8Linear) for m in loaded.model.modules()):
        count = quantize_linears(loaded.model, ops)
        logger.info("quantized %d linear layers to FP8 (weights in %dx%d blocks)", count,
                    LOAD_TIME_BLOCK, LOAD_TIME_BLOCK)
    elif quantization == "int8":
        if any(isinstance(m, Fp8Linear) for m in loaded.model.modules()):
            raise ValueError("quantization='int8' cannot apply to an FP8 checkpoint")
        count = quantize_model_int8(loaded.model)
        logger.info("quantized %d linear layers (LM head included) to int8", count)
    return loaded


def _is_low_bit_gguf(path: Path) -> bool:
    if path.is_dir():
        return False
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            return False
    from engine.model.gguf_loader import has_low_bit_weights

    return has_low_bit_weights(path)


def _load_checkpoint(
    path: Path, dtype: torch.dtype, device: torch.device, ops: SimpleNamespace,
    comm: TPComm | None,
) -> LoadedModel:
    if path.is_dir():
        return load_hf_folder(path, dtype, device, ops, comm)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == GGUF_MAGIC:
        # Imported here: the `gguf` package is a dependency of this format only (the GPU
        # image lacks it).
        from engine.model.gguf_loader import load_gguf

        return load_gguf(path, dtype, device, ops, comm)
    raise ValueError(
        f"{path} is not a model: expected an HF-style folder (config.json + *.safetensors) "
        "or a GGUF file"
    )
