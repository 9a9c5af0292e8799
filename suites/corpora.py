"""Text and tokens with no network: the Python standard library's source (pretraining), Python's documentation
prose (pydoc_data.topics, fine-tuning), a user's text or LLM-Adapters JSONL (--data); byte tokens or a local
tokenizer; random windows of them."""
from __future__ import annotations

import json
import os
import sysconfig

import torch


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
