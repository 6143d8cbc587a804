"""Frozen configuration: the model's shape (from config.json or GGUF metadata) and the engine's knobs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Map a user's dtype name to a torch dtype, with a clear error for anything else."""
    if isinstance(dtype, torch.dtype):
        if dtype in DTYPES.values():
            return dtype
        raise ValueError(f"dtype {dtype} is not supported; use one of float32, bfloat16, float16")
    if isinstance(dtype, str) and dtype.lower() in DTYPES:
        return DTYPES[dtype.lower()]
    raise ValueError(f"dtype {dtype!r} is not supported; use one of float32, bfloat16, float16")


@dataclass(frozen=True)
class RopeScaling:
    """Rotary-embedding frequency scaling: 'linear' or Llama 3.1's 'llama3'."""

    rope_type: str
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> RopeScaling | None:
        if not d:
            return None
        rope_type = d.get("rope_type", d.get("type"))
        if rope_type in (None, "default"):
            return None
        if rope_type not in ("linear", "llama3"):
            raise ValueError(f"rope_scaling type {rope_type!r} is not supported (linear, llama3)")
        return cls(
            rope_type=rope_type,
            factor=float(d.get("factor", 1.0)),
            low_freq_factor=float(d.get("low_freq_factor", 1.0)),
            high_freq_factor=float(d.get("high_freq_factor", 4.0)),
            original_max_position_embeddings=int(d.get("original_max_position_embeddings", 8192)),
        )


@dataclass(frozen=True)
class ModelConfig:
    """The shape of a Llama-family transformer."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    eos_token_ids: tuple[int, ...] = ()
    torch_dtype: str = "float32"  # the checkpoint's own dtype

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads != 0:
            raise ValueError(
                f"num_attention_heads ({self.num_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_kv_heads})"
            )

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any]) -> ModelConfig:
        """From a transformers-style config.json of a LlamaForCausalLM."""
        arch = cfg.get("architectures") or ["LlamaForCausalLM"]
        if cfg.get("model_type", "llama") != "llama" and "LlamaForCausalLM" not in arch:
            raise ValueError(f"unsupported model_type {cfg.get('model_type')!r}: only llama")
        num_heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        # transformers >= 5 writes rope_theta and the scaling into one `rope_parameters` dict.
        rope = cfg.get("rope_parameters") or {}
        eos = cfg.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
        return cls(
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(cfg["intermediate_size"]),
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=num_heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or num_heads),
            head_dim=int(cfg.get("head_dim") or hidden // num_heads),
            max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0))),
            rope_scaling=RopeScaling.from_dict(cfg.get("rope_scaling") or rope),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            attention_bias=bool(cfg.get("attention_bias", False)),
            mlp_bias=bool(cfg.get("mlp_bias", False)),
            eos_token_ids=eos_ids,
            torch_dtype=str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32"),
        )

    @classmethod
    def from_gguf_metadata(cls, meta: dict[str, Any], has_output: bool) -> ModelConfig:
        """From GGUF metadata (architecture `llama`); `has_output` says if output.weight exists."""
        arch = meta.get("general.architecture")
        if arch != "llama":
            raise ValueError(f"unsupported GGUF architecture {arch!r}: only llama")

        def get(key: str, default: Any = None) -> Any:
            value = meta.get(f"llama.{key}", default)
            if value is None:
                raise ValueError(f"GGUF metadata lacks llama.{key}")
            return value

        hidden = int(get("embedding_length"))
        num_heads = int(get("attention.head_count"))
        head_dim = int(meta.get("llama.rope.dimension_count") or hidden // num_heads)
        vocab = meta.get("llama.vocab_size") or len(meta.get("tokenizer.ggml.tokens", []))
        scaling = None
        if meta.get("llama.rope.scaling.type") == "linear":
            scaling = RopeScaling("linear", factor=float(meta["llama.rope.scaling.factor"]))
        return cls(
            vocab_size=int(vocab),
            hidden_size=hidden,
            intermediate_size=int(get("feed_forward_length")),
            num_layers=int(get("block_count")),
            num_heads=num_heads,
            num_kv_heads=int(meta.get("llama.attention.head_count_kv") or num_heads),
            head_dim=head_dim,
            max_position_embeddings=int(get("context_length")),
            rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
            rope_theta=float(meta.get("llama.rope.freq_base", 10000.0)),
            rope_scaling=scaling,
            tie_word_embeddings=not has_output,
        )


@dataclass(frozen=True)
class EngineConfig:
    """What the user asked the engine for; derived values are returned, never written back."""

    model: str
    dtype: str = "float32"
    device: str = "cpu"
    seed: int = 0
    max_model_len: int | None = None  # None: the model's own context length
    block_size: int = 16
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    enable_chunked_prefill: bool = True
    enable_prefix_caching: bool = True
    # KV cache budget: bytes on the CPU (None: 1 GiB); on CUDA the fraction of GPU memory
    # the whole engine may use, the cache taking what the weights leave.
    kv_cache_bytes: int | None = None
    gpu_memory_utilization: float = 0.9
    # "fp8": quantize the linear layers' weights to float8_e4m3fn at load time (W8A8: weights
    # in 128x128 blocks, activations in dynamic 1x128 groups). FP8 checkpoints are detected
    # and load as they are without it. "int8" (CPU): int8 weights with per-channel scales,
    # LM head included; the CPU default for GGUF files with 4/5/8-bit tensors. "none":
    # float weights even then.
    quantization: str | None = None
    # "auto": read the checkpoint; "dummy": random weights for the config, no weight file.
    load_format: str = "auto"
    # Which kernels run the hot paths: "auto" = Triton on CUDA, the torch reference elsewhere.
    kernel_backend: str = "auto"
    # CUDA graphs for decode steps (CUDA + Triton only); True turns them off.
    enforce_eager: bool = False
    # Speculative decoding by prompt lookup: up to this many n-gram draft tokens per
    # decoding sequence, verified in the same forward (None or 0: off).
    speculative_ngram: int | None = None
    # Tensor parallelism: the model split over this many processes (GPUs), Megatron-style;
    # rank 0 is this process. See engine/parallel/.
    tensor_parallel_size: int = 1

    def __post_init__(self) -> None:
        parse_dtype(self.dtype)
        tp = self.tensor_parallel_size
        if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
            raise ValueError(f"tensor_parallel_size must be a positive integer, got {tp!r}")
        if self.block_size <= 0 or self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a power of two, got {self.block_size}")
        if self.max_model_len is not None and self.max_model_len <= 0:
            raise ValueError(f"max_model_len must be positive, got {self.max_model_len}")
        for name in ("max_num_seqs", "max_num_batched_tokens"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        k = self.speculative_ngram
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
            raise ValueError(f"speculative_ngram must be a non-negative integer, got {k!r}")
        if self.kv_cache_bytes is not None and self.kv_cache_bytes <= 0:
            raise ValueError(f"kv_cache_bytes must be positive, got {self.kv_cache_bytes}")
        choices = {"quantization": (None, "fp8", "int8", "none"), "load_format": ("auto", "dummy"),
                   "kernel_backend": ("auto", "torch", "triton")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(
                f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}"
            )
