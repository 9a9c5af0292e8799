"""Named model shapes (real published configs), as gpt-fast's transformer_configs."""
from __future__ import annotations

from dataclasses import dataclass

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


MODELS = {m.name: m for m in [
    ModelShape("tiny", "llama", 256, 688, 4, 4, 64, 4, 512),
    ModelShape("llama-3.2-1b", "llama", 2048, 8192, 32, 8, 64, 16, 128256),
    ModelShape("llama-3.1-8b", "llama", 4096, 14336, 32, 8, 128, 32, 128256),
    ModelShape("qwen2.5-7b", "qwen2", 3584, 18944, 28, 4, 128, 28, 152064),
]}


def get(name: str) -> ModelShape:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    return MODELS[name]
