"""Shared fixtures: tiny random Llama checkpoints written to a temp dir, and the real model."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent

# Triton kernels run on the CPU through the interpreter. The switch is read when a kernel is
# decorated, so it must be set before anything imports kernels/ (the engine does).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")



@pytest.fixture(scope="session", autouse=True)
def data_dir_outside_the_checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Servers started by tests (in-process or as subprocesses, which inherit the variable)
    keep their data in a temporary folder, never in the user's ./engine-data: the suite can
    run beside a server the user started in this checkout."""
    default = REPO / "engine-data"
    existed = default.exists()
    data = tmp_path_factory.mktemp("engine-data")
    os.environ["ENGINE_DATA_DIR"] = str(data)
    yield data
    if not existed and default.exists():
        pytest.fail(f"a test wrote {default} inside the checkout")


# Shapes of the tiny checkpoints: a Llama-2-like one (MHA, untied) and a Llama-3.1-like one
# (GQA, llama3 rope scaling, tied embeddings).
TINY_CONFIGS: dict[str, dict] = {
    "llama2": {
        "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 4, "rope_theta": 10000.0, "tie_word_embeddings": False,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-5,
    },
    "llama31": {
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 8,
        "num_key_value_heads": 2, "rope_theta": 500000.0, "tie_word_embeddings": True,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-5,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
    },
}

TOKENIZER_CORPUS = [
    "The capital of France is Paris. The quick brown fox jumps over the lazy dog.",
    "Écoute, café, naïve, façade — 東京は日本の首都です。 🙂🚀 emoji and ünïcödé.",
    "def f(x):\n    return x * 2  # numbers 0123456789 and    spaces",
]
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)


def write_tokenizer(folder: Path, vocab_size: int) -> None:
    """A byte-level BPE trained on a small corpus, saved the way HF checkpoints ship it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(TOKENIZER_CORPUS * 20, trainer)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": None, "eos_token": "<|im_end|>", "add_bos_token": False,
        "chat_template": CHATML, "tokenizer_class": "PreTrainedTokenizerFast",
    }))


def make_tiny_llama(folder: Path, kind: str | dict, dtype: torch.dtype = torch.float32) -> Path:
    """Write a random LlamaForCausalLM (transformers' own init and file layout) into folder.

    `kind` names one of TINY_CONFIGS, or is such a dict of config.json fields itself."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    vocab = 320
    config = LlamaConfig(vocab_size=vocab, eos_token_id=2, bos_token_id=None,
                         **(TINY_CONFIGS[kind] if isinstance(kind, str) else kind))
    torch.manual_seed(1234)
    model = LlamaForCausalLM(config).to(dtype)
    with torch.no_grad():  # larger than the default init so that logits are not all near-ties
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2)
    model.save_pretrained(folder, safe_serialization=True)
    write_tokenizer(folder, vocab)
    return folder


@pytest.fixture(scope="session", params=sorted(TINY_CONFIGS))
def tiny_llama(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp(f"tiny-{request.param}"), request.param)


def make_repetitive_llama(folder: Path) -> Path:
    """The llama31 tiny model with its layers' outputs (o_proj, down_proj) scaled to a tenth:
    the next token depends mostly on the current one, so greedy output falls into loops
    that n-gram drafts predict (speculative decoding gets drafts accepted), while attention
    over the context still matters."""
    from safetensors.torch import load_file, save_file

    make_tiny_llama(folder, "llama31")
    for shard in folder.glob("*.safetensors"):
        weights = load_file(shard)
        for name in weights:
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                weights[name] = weights[name] * 0.1
        save_file(weights, shard, metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="session")
def repetitive_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repetitive_llama(tmp_path_factory.mktemp("tiny-repetitive"))


def smollm2_path() -> Path:
    env = os.environ.get("ENGINE_SMOLLM2_GGUF")
    if env:
        return Path(env)
    from weights import model_path

    return model_path("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    path = smollm2_path()
    if not path.exists():
        pytest.skip(f"the real model is not fetched ({path}); run python -m weights.fetch")
    return path


@pytest.fixture(scope="session")
def smollm2_tokenizer_meta(smollm2_gguf: Path) -> dict:
    """The real model's tokenizer.* metadata, read once (our reader: gguf.GGUFReader gives the
    same values but takes seconds, building numpy views of every string)."""
    from engine.model.gguf_file import GGUFFile

    gf = GGUFFile(smollm2_gguf)
    try:
        return {k: v for k, v in gf.metadata.items() if k.startswith("tokenizer.")}
    finally:
        gf.close()


@pytest.fixture(scope="session")
def smollm2_hf_tokenizer(smollm2_gguf: Path):
    """transformers' tokenizer of the real model: the reference, loaded once per run."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` need CUDA: without it they are skipped, saying why."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (marked gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
