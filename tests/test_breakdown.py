"""Layer index and module type parsed from the usual parameter naming schemes, and grouping."""

from __future__ import annotations

import pytest

from submask.breakdown import Location, group_of, locate, sort_groups
from submask.errors import SubmaskError


@pytest.mark.parametrize("name,layer,module", [
    ("model.layers.12.self_attn.q_proj.weight", 12, "self_attn.q_proj"),            # Llama, Qwen, Mistral
    ("model.layers.0.mlp.up_proj.weight", 0, "mlp.up_proj"),
    ("model.layers.3.self_attn.q_proj.bias", 3, "self_attn.q_proj"),
    ("model.layers.7.input_layernorm.weight", 7, "input_layernorm"),
    ("encoder.layer.3.attention.self.query.weight", 3, "attention.self.query"),    # BERT, MiniLM
    ("bert.encoder.layer.11.output.dense.weight", 11, "output.dense"),
    ("transformer.h.5.mlp.c_fc.weight", 5, "mlp.c_fc"),                            # GPT-2
    ("blocks.2.attn.qkv.weight", 2, "attn.qkv"),                                   # ViT, timm
    ("model.layers.4.block_sparse_moe.experts.3.w1.weight", 4, "block_sparse_moe.experts.3.w1"),
    ("model.embed_tokens.weight", None, "embeddings"),
    ("embeddings.word_embeddings.weight", None, "embeddings"),
    ("embeddings.LayerNorm.weight", None, "embeddings"),
    ("transformer.wte.weight", None, "embeddings"),
    ("lm_head.weight", None, "lm_head"),
    ("model.norm.weight", None, "norm"),
    ("transformer.ln_f.bias", None, "norm"),
    ("pooler.dense.weight", None, "pooler"),
    ("scale", None, "scale"),
])
def test_locate(name: str, layer: int | None, module: str) -> None:
    assert locate(name) == Location(layer, module)


def test_group_of_each_grouping() -> None:
    name = "model.layers.12.self_attn.q_proj.weight"
    assert group_of(name, "overall") == "all"
    assert group_of(name, "tensor") == name
    assert group_of(name, "layer") == "12"
    assert group_of(name, "module") == "self_attn.q_proj"
    assert group_of("model.embed_tokens.weight", "layer") == "embeddings"
    with pytest.raises(SubmaskError, match="unknown grouping 'row'"):
        group_of(name, "row")


def test_sort_groups_puts_numbered_layers_first_in_numeric_order() -> None:
    groups = ["embeddings", "10", "2", "norm", "2", "1"]
    assert sort_groups(groups, "layer") == ["1", "2", "10", "embeddings", "norm"]
    assert sort_groups(["q", "k", "q"], "module") == ["q", "k"]
