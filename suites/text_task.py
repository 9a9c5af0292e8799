"""The fine-tuning task both accuracy suites run, and its shared hyper-parameters.

The model: the tiny byte-level model pretrained here (suites/tiny_model.py), SmolLM2-135M-Instruct with
model="smollm2-135m" (real weights, celora_bench/pretrained.py, its own tokenizer), or --model-path (a
local transformers checkpoint with its tokenizer). The text (suites/corpora.py): Python's documentation
prose, or --data (plain text, or LLM-Adapters JSONL), split into train and held-out eval.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from celora_bench import models, pretrained
from suites.corpora import Tokens, pydoc_prose, read_user_data, windows
from suites.tiny_model import pretrained_tiny

EVAL_FRACTION = 0.1
# the LoRA fine-tune both accuracy suites run (approx-error captures it, convergence trains it)
RANK, ALPHA, LR = 16, 32.0, 1e-3
BATCH, SEQ = 8, 128


@dataclass
class Task:
    """A model factory and fine-tuning text, tokenized, with a held-out split."""

    model_path: str
    tokens: Tokens
    train: torch.Tensor
    eval: torch.Tensor
    source: str
    model_name: str = "tiny-byte"      # a registry model with real weights (celora_bench/pretrained.py) is kept loaded
    label: str = models.weights_label("tiny-byte")

    def model(self, dtype=torch.float32):
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()          # "Loading weights" bars, once per arm and seed
        if self.model_name in pretrained.PRETRAINED:
            m = copy.deepcopy(_base(self.model_name)).to(dtype)      # loaded once, copied per arm and seed
        else:
            m = models.build_model("tiny-byte", path=self.model_path, dtype=dtype, attn="sdpa")
        m.config.use_cache = False
        return m

    def eval_batches(self, batch: int, seq: int, n: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(1234)
        return [windows(self.eval, batch, seq, g) for _ in range(n)]


_BASES: dict[str, torch.nn.Module] = {}


def _base(name: str):
    """The registry model's fp32 weights, loaded once per process."""
    if name not in _BASES:
        _BASES[name] = pretrained.load(name)
    return _BASES[name]


_TASKS: dict[tuple, Task] = {}


def task(model_path: str | None = None, data: str | None = None, model: str | None = None) -> Task:
    """The fine-tuning task: the cached pretrained tiny model on pydoc prose, a registry model with real
    weights (model="smollm2-135m", its own tokenizer), or the user's model and data."""
    key = (model_path, data, model)
    if key in _TASKS:
        return _TASKS[key]
    name, label = "tiny-byte", models.weights_label("tiny-byte")
    if model_path is None and model in pretrained.PRETRAINED:
        path, tokens = pretrained.fetch(model), Tokens(pretrained.tokenizer(model))
        name, label = model, pretrained.label(model)
    elif model_path is None:
        path, tokens = pretrained_tiny(), Tokens()
    else:
        from transformers import AutoTokenizer
        try:
            tok = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ValueError(f"--model-path {model_path!r}: no tokenizer there ({type(e).__name__})") from None
        path, tokens, label = model_path, Tokens(tok), models.weights_label("local", model_path)
    text = read_user_data(data) if data else pydoc_prose()
    ids = tokens(text)
    cut = int(len(ids) * (1 - EVAL_FRACTION))
    t = Task(path, tokens, ids[:cut], ids[cut:], data or "pydoc_data.topics", name, label)
    _TASKS[key] = t
    return t


def weights_label(case) -> str:
    """What the weights are, in the model registry's wording (celora_bench.models.weights_label)."""
    return models.weights_label(case.model, case.param("path"))


def on_layers(plan: dict, layers: str) -> dict:
    """A conversion plan (pattern -> config) restricted to the given decoder blocks ("all" or "0,15,29"):
    pattern "*v_proj" becomes "*.layers.<i>.*v_proj" for each i; other blocks keep their frozen Linear."""
    if layers == "all":
        return dict(plan)
    return {f"*.layers.{int(i)}.*{pat.lstrip('*')}": cfg for i in layers.split(",") for pat, cfg in plan.items()}


def model_of(opts) -> str:
    """The accuracy suites' model: "local" (--model-path), tiny-byte (default) or a registry model with real
    weights. A shape-only model is refused: these suites need trained weights."""
    if opts.model_path:
        return "local"
    name = opts.model or "tiny-byte"
    if name != "tiny-byte" and name not in pretrained.PRETRAINED:
        raise ValueError(f"--model {name!r}: the accuracy suites need trained weights; allowed: tiny-byte, "
                         f"{', '.join(pretrained.PRETRAINED)} (or --model-path)")
    return name
