"""Tiny random causal LMs and LoRA adapters, built offline in seconds.

The tests, the benchmark and the local-mode demo need real Hugging Face model
directories (config, safetensors weights, a tokenizer with a chat template) and
real PEFT adapters, but may not download anything. This module makes both from
scratch: a byte-level BPE tokenizer trained on a few sentences, a randomly
initialised Llama or GPT-2, and LoRA adapters made with PEFT with non-zero
``lora_B`` (``init_lora_weights=False``) so that merging them visibly changes
the model. Random weights produce gibberish, but greedy decoding is
deterministic, which is all the tests need.

Files are made world-readable after saving: safetensors writes ``0600`` whatever
the umask, which breaks an image built as root and served as another user.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>", "<|user|>", "<|assistant|>", "<|system|>"]

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|endoftext|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Kubernetes schedules pods onto nodes that have free GPUs.",
    "A LoRA adapter adds a low-rank update to the weights of a model.",
    "Hello world, this is a tiny language model with random weights.",
    "Inference servers stream tokens to clients as they are generated.",
    "1 2 3 4 5 6 7 8 9 10, and some punctuation: ;:!?()[]{}",
]

# Llama and GPT-2 name their projections differently; these are the defaults
# that `make_lora_adapter` targets when none are given.
DEFAULT_TARGETS = {
    "llama": ("q_proj", "v_proj"),
    "gpt2": ("c_attn",),
}


def _make_tokenizer(vocab_size: int):  # -> PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|pad|>",
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    return hf_tok


def make_world_readable(directory: str | os.PathLike[str]) -> None:
    """chmod every file under ``directory`` to 0644 (safetensors saves 0600)."""
    for path in Path(directory).rglob("*"):
        if path.is_file():
            path.chmod(0o644)


def make_tiny_model(
    directory: str | os.PathLike[str],
    arch: str = "llama",
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    intermediate_size: int | None = None,
    num_heads: int = 4,
    max_position_embeddings: int = 1024,
    seed: int = 0,
    num_kv_heads: int | None = None,
) -> Path:
    """Save a random causal LM (``arch`` "llama" or "gpt2") and its tokenizer to ``directory``.

    The defaults give a ~130k-parameter model that loads in milliseconds. For
    the benchmark's ~25M-parameter Llama use hidden_size=512, num_layers=8,
    intermediate_size=1376, num_heads=8.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _make_tokenizer(vocab_size=512)
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    torch.manual_seed(seed)
    if arch == "llama":
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            intermediate_size=intermediate_size or 2 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_kv_heads or num_heads,
            max_position_embeddings=max_position_embeddings,
            **ids,
        )
        model = LlamaForCausalLM(config)
    elif arch == "gpt2":
        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_embd=hidden_size,
            n_layer=num_layers,
            n_head=num_heads,
            n_inner=intermediate_size,
            n_positions=max_position_embeddings,
            **ids,
        )
        model = GPT2LMHeadModel(config)
    elif arch in ("gemma3", "mistral3"):
        model = _tiny_multimodal(arch, len(tokenizer), hidden_size, num_layers, num_heads, max_position_embeddings,
                                 ids)
    else:
        raise ValueError(f"arch must be 'llama', 'gpt2', 'gemma3' or 'mistral3', not {arch!r}")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    make_world_readable(out)
    return out


def _tiny_multimodal(arch: str, vocab: int, hidden: int, layers: int, heads: int, positions: int,
                     ids: dict[str, Any]) -> Any:
    """A tiny Gemma3ForConditionalGeneration or Mistral3ForConditionalGeneration (text + a one-layer vision tower)."""
    import transformers as tf

    text = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), head_dim=hidden // heads,
                max_position_embeddings=positions, **ids)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                  patch_size=14)
    if arch == "gemma3":
        config = tf.Gemma3Config(text_config=tf.Gemma3TextConfig(**text), vision_config=tf.SiglipVisionConfig(**vision),
                                 mm_tokens_per_image=4, **ids)
        return tf.Gemma3ForConditionalGeneration(config)
    config = tf.Mistral3Config(text_config=tf.MistralConfig(**text),
                               vision_config=tf.PixtralVisionConfig(head_dim=16, **vision), **ids)
    return tf.Mistral3ForConditionalGeneration(config)


def make_lora_adapter(
    base_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    r: int = 4,
    alpha: float = 8,
    targets: Sequence[str] | None = None,
    seed: int = 0,
    *,
    use_rslora: bool = False,
) -> Path:
    """Save a PEFT LoRA adapter for the model in ``base_dir`` to ``out_dir``.

    Both LoRA matrices are random (``init_lora_weights=False``), so the adapter
    changes the model's output. ``targets`` defaults to the attention
    projections of the architecture (``DEFAULT_TARGETS``). GPT-2's Conv1D
    layers get ``fan_in_fan_out=True``, as PEFT requires.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    arch = "gpt2" if base.config.model_type == "gpt2" else "llama"
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=list(targets or DEFAULT_TARGETS[arch]),
        lora_dropout=0.0,
        init_lora_weights=False,
        use_rslora=use_rslora,
        fan_in_fan_out=arch == "gpt2",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(seed)
    peft_model = get_peft_model(base, config)
    out = Path(out_dir)
    peft_model.save_pretrained(out)
    make_world_readable(out)
    return out
