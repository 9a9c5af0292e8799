"""The harness's model registry: named shapes (real published configs, as gpt-fast's transformer_configs),
the projection order, and how a model is built (random init from a shape, the local cache of a model with
real weights, celora_bench/pretrained.py, or a local checkpoint). Suites import it; it imports no suite."""
from __future__ import annotations

from dataclasses import dataclass, replace

# The seven LoRA targets of a LLaMA-family decoder block, in block order: the one order every table and plot
# uses. core.convert keeps its own copy (core imports nothing from the harness); a test holds them equal.
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelShape:
    name: str
    family: str
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    layers: int
    vocab: int

    def layer_shapes(self) -> dict[str, tuple[int, int]]:
        """Projection -> (m, n) = (out_features, in_features)."""
        h, q, kv, f = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return {"q_proj": (q, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, q),
                "gate_proj": (f, h), "up_proj": (f, h), "down_proj": (h, f)}

    def distinct_shapes(self) -> dict[str, tuple[int, int]]:
        """The projections that share an (m, n) joined by "+": {"q_proj+o_proj": (2048, 2048), ...}.
        A layer's time and FLOPs depend on its shape only, so one measurement stands for all of them."""
        by_shape: dict[tuple[int, int], list[str]] = {}
        for name, shape in self.layer_shapes().items():
            by_shape.setdefault(shape, []).append(name)
        return {"+".join(names): shape for shape, names in by_shape.items()}


def projections_of(layer: str) -> list[str]:
    """The projections a layer label stands for: "q_proj+o_proj" -> ["q_proj", "o_proj"]."""
    return layer.split("+")


def layer_order(layer: str) -> int:
    """Sort key: the position of the label's first projection in PROJECTIONS (unknown names last)."""
    first = projections_of(layer)[0]
    return PROJECTIONS.index(first) if first in PROJECTIONS else len(PROJECTIONS)


def weights_label(model: str, path: str | None = None) -> str:
    """What a model's weights are, one wording wherever results are shown: a registry model with real
    weights, a local checkpoint, or the tiny byte-level model the accuracy suites pretrain here."""
    from celora_bench import pretrained
    if model in pretrained.PRETRAINED:
        return pretrained.label(model)
    if model == "local" or path is not None:
        return f"local checkpoint {path}"
    return f"{model} (pretrained here on the stdlib source)"


MODELS = {m.name: m for m in [
    ModelShape("tiny", "llama", 256, 688, 4, 4, 64, 4, 512),
    ModelShape("tiny-byte", "llama", 256, 688, 4, 2, 64, 4, 256),     # the accuracy suites' byte-level model
    ModelShape("llama-3.2-1b", "llama", 2048, 8192, 32, 8, 64, 16, 128256),
    ModelShape("llama-3.1-8b", "llama", 4096, 14336, 32, 8, 128, 32, 128256),
    ModelShape("qwen2.5-0.5b", "qwen2", 896, 4864, 14, 2, 64, 24, 151936),
    ModelShape("qwen2.5-7b", "qwen2", 3584, 18944, 28, 4, 128, 28, 152064),
    ModelShape("smollm2-135m", "llama", 576, 1536, 9, 3, 64, 30, 49152),   # real weights: celora_bench/pretrained.py
]}


def get(name: str) -> ModelShape:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    return MODELS[name]


def hf_config(shape: ModelShape, attn: str = "sdpa"):
    """A transformers config with the real shapes (no download): LlamaConfig or Qwen2Config."""
    import transformers

    kw = dict(hidden_size=shape.hidden, intermediate_size=shape.intermediate,
              num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads, head_dim=shape.head_dim,
              num_hidden_layers=shape.layers, vocab_size=shape.vocab, max_position_embeddings=4096,
              tie_word_embeddings=False, attn_implementation=attn)
    if shape.family == "qwen2":
        return transformers.Qwen2Config(**kw)
    return transformers.LlamaConfig(**kw)


def build_model(name: str, dtype=None, attn: str = "sdpa", seed: int = 0, path: str | None = None,
                layers: int | None = None):
    """A causal LM: random init from the named shapes, or loaded from a local checkpoint folder.

    layers: build only this many decoder layers of a random-init model (None: all of them).

    A model with real weights in the registry (celora_bench/pretrained.py, e.g. smollm2-135m) is loaded from
    the cache, fetched on first use."""
    import torch
    import transformers

    from celora_bench import pretrained
    if path is None and name in pretrained.PRETRAINED:
        return pretrained.load(name, dtype=dtype, attn=attn)
    if path is not None:
        return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32,
                                                                 attn_implementation=attn, local_files_only=True)
    shape = get(name) if layers is None else replace(get(name), layers=layers)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(hf_config(shape, attn))
    return model.to(dtype) if dtype is not None else model
