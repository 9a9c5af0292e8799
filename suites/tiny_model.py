"""The accuracy suites' small model: a LLaMA-shaped byte-level model (celora_bench.models "tiny-byte")
pretrained once, deterministically, on the standard library's source and cached under the model cache
(celora_bench.pretrained.cache_dir), keyed by everything that decides its weights."""
from __future__ import annotations

import hashlib
import json
import os

import torch

from celora_bench import models
from celora_bench.pretrained import cache_dir
from suites.corpora import Tokens, stdlib_source, windows

PRETRAIN_STEPS = 300


PRETRAIN_BATCH, PRETRAIN_SEQ, PRETRAIN_LR = 16, 128, 2e-3


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
