"""Real text and a small LLaMA-shaped model, with no network.

Pretraining text: the Python standard library's source. Fine-tuning text:
Python's documentation prose (pydoc_data.topics), split into train and
held-out eval. Both ship with every Python. Tokens are bytes (vocabulary 256).
The small model is pretrained once, deterministically, and cached. With
model="smollm2-135m" the model is SmolLM2-135M-Instruct (real weights, Q4_1
dequantized to fp32, celora_bench/pretrained.py) and the text is tokenized by its
own tokenizer. Users pass
--model-path (a local transformers checkpoint with its tokenizer) and --data
(plain text, or JSONL in the LLM-Adapters instruction/input/output format).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import sysconfig
from dataclasses import dataclass

import torch

from celora_bench import models, pretrained
from celora_bench.pretrained import cache_dir

PRETRAIN_STEPS = 300
PRETRAIN_BATCH, PRETRAIN_SEQ, PRETRAIN_LR = 16, 128, 2e-3
EVAL_FRACTION = 0.1
# the LoRA fine-tune both accuracy suites run (approx-error captures it, convergence trains it)
RANK, ALPHA, LR = 16, 32.0, 1e-3
BATCH, SEQ = 8, 128


def stdlib_source(max_bytes: int = 4_000_000) -> bytes:
    """The standard library's .py files (tests excluded), in sorted order, up to max_bytes."""
    root = sysconfig.get_paths()["stdlib"]
    out, total = [], 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in ("test", "tests", "idlelib", "site-packages", "__pycache__"))
        for name in sorted(files):
            if name.endswith(".py"):
                with open(os.path.join(folder, name), "rb") as f:
                    data = f.read()
                out.append(data)
                total += len(data)
                if total >= max_bytes:
                    return b"\n".join(out)[:max_bytes]
    return b"\n".join(out)


def pydoc_prose() -> bytes:
    from pydoc_data.topics import topics
    return "\n\n".join(topics[k] for k in sorted(topics)).encode("utf-8")


def read_user_data(path: str) -> bytes:
    """Plain text, or JSONL records {"instruction", "input", "output"} (LLM-Adapters) joined as prompts."""
    with open(path, "rb") as f:
        raw = f.read()
    if path.endswith((".jsonl", ".json")):
        lines = []
        for i, line in enumerate(raw.decode("utf-8").splitlines()):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"--data {path!r}: line {i + 1} is not JSON") from None
            if not isinstance(rec, dict) or "instruction" not in rec or "output" not in rec:
                raise ValueError(f"--data {path!r}: line {i + 1} has no 'instruction' and 'output' fields")
            lines.append(f"### Instruction:\n{rec['instruction']}\n\n### Input:\n{rec.get('input', '')}\n\n"
                         f"### Response:\n{rec['output']}\n")
        raw = "\n".join(lines).encode("utf-8")
    if len(raw) < 4096:
        raise ValueError(f"--data {path!r} holds {len(raw)} bytes; at least 4096 are needed")
    return raw


class Tokens:
    """Byte tokens, or a local checkpoint's tokenizer."""

    def __init__(self, tokenizer=None):
        self.tokenizer = tokenizer

    def __call__(self, data: bytes) -> torch.Tensor:
        if self.tokenizer is None:
            return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
        from transformers.utils import logging as hf_logging
        hf_logging.set_verbosity_error()           # "sequence longer than the model's maximum": windows are cut later
        return torch.tensor(self.tokenizer(data.decode("utf-8", "replace"))["input_ids"], dtype=torch.long)


def windows(ids: torch.Tensor, batch: int, seq: int, generator: torch.Generator) -> torch.Tensor:
    """batch random windows of seq tokens: (batch, seq)."""
    starts = torch.randint(0, len(ids) - seq - 1, (batch,), generator=generator)
    return torch.stack([ids[s:s + seq] for s in starts.tolist()])


def _pretrain_key() -> str:
    shape = models.get("tiny-byte")
    key = json.dumps([shape.__dict__, PRETRAIN_STEPS, PRETRAIN_BATCH, PRETRAIN_SEQ, PRETRAIN_LR,
                      hashlib.sha256(stdlib_source()).hexdigest(), torch.__version__.split("+")[0]])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def pretrained_tiny(log=None) -> str:
    """Path of the small byte-level model pretrained on the stdlib source (trained once, then cached)."""
    path = os.path.join(cache_dir(), f"pretrained-tiny-byte-{_pretrain_key()}")
    if os.path.exists(os.path.join(path, "config.json")):
        return path
    torch.manual_seed(0)
    model = models.build_model("tiny-byte", seed=0)
    model.config.use_cache = False
    ids = Tokens()(stdlib_source())
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=PRETRAIN_LR, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, PRETRAIN_LR, total_steps=PRETRAIN_STEPS, pct_start=0.1)
    model.train()
    for step in range(PRETRAIN_STEPS):
        x = windows(ids, PRETRAIN_BATCH, PRETRAIN_SEQ, g)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log and step % 50 == 0:
            log(f"pretraining the tiny model on the stdlib source: step {step}, loss {loss.item():.3f}")
    tmp = path + ".tmp"
    model.save_pretrained(tmp)
    os.replace(tmp, path)
    return path


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
