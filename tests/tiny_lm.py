"""A tiny Llama causal LM and a word-level tokenizer built locally (no downloads), a seeded mask over its
parameters, and the check that restricted training kept every entry outside the mask."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers

from submask import Mask, TensorMask

WORDS = ["the", "cat", "dog", "sat", "ran", "on", "a", "mat", "rug", "is", "good", "bad", "yes", "no", "what",
         "where", "did", "go", "?", "."]
DENSITY = 0.3


def tokenizer() -> transformers.PreTrainedTokenizerFast:
    """A word-level tokenizer over ``WORDS`` with pad, eos and unknown tokens and a plain chat template."""
    vocab = {word: index for index, word in enumerate(["<pad>", "<eos>", "<unk>", *WORDS])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>",
                                                unk_token="<unk>")
    fast.chat_template = ("{% for m in messages %}{{ m['content'] }} {% endfor %}"
                          "{% if add_generation_prompt %}{% endif %}")
    return fast


def model(seed: int = 0) -> transformers.LlamaForCausalLM:
    """A 2-layer Llama of hidden size 16 over the tokenizer's vocabulary, random init, float32."""
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=len(WORDS) + 3, hidden_size=16, intermediate_size=32,
                                      num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                      max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=1)
    return transformers.LlamaForCausalLM(config).float()


def saved_model(directory: Path, seed: int = 0) -> transformers.LlamaForCausalLM:
    """``model(seed)`` saved with the tokenizer to ``directory`` and loaded back from there, so that trainers
    that load a reference model from the policy's own path (TRL) find it on disk."""
    model(seed).save_pretrained(directory)
    tokenizer().save_pretrained(directory)
    return transformers.LlamaForCausalLM.from_pretrained(directory, dtype=torch.float32)


def seeded_mask(module: torch.nn.Module, seed: int = 0, prefix: str = "") -> Mask:
    """A random mask of ``DENSITY`` over every parameter of ``module`` (names with ``prefix`` in front)."""
    generator = torch.Generator().manual_seed(seed)
    return Mask({prefix + name: TensorMask.from_torch(torch.rand(p.shape, generator=generator) < DENSITY)
                 for name, p in module.named_parameters()})


def start_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def moved_inside_kept_outside(end: dict[str, torch.Tensor], start: dict[str, torch.Tensor], mask: Mask,
                              rename=lambda name: name) -> tuple[int, int]:
    """(masked entries that moved, entries outside the mask that moved), comparing bits."""
    moved = broken = 0
    for name, value in end.items():
        if rename(name) not in mask:
            continue
        inside = mask[rename(name)].to_torch()
        changed = value.detach().cpu().view(torch.int32) != start[name].cpu().view(torch.int32)
        moved += int(changed[inside].sum())
        broken += int(changed[~inside].sum())
    return moved, broken
