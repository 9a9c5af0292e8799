"""A generated arithmetic word-problem task (in the spirit of math_10k), offline and seeded.

Each problem is a template and its operands; its answer is an integer >= 0.
Split by construction: a problem belongs to the held-out test split iff
crc32(key) % TEST_EVERY == 0, key = "template|a|b|c", so no problem can be in
both splits whatever the seeds; the generator draws until it has n problems
of the asked split, without repeats. Text format:
    "Question: <problem>\\nAnswer: <integer>" + eos
Training loss is on the answer tokens (and eos) only; the scores are exact match
of the first integer in the greedy continuation of "Question: ...\\nAnswer:" (accuracy)
and the cross-entropy of the answer tokens and eos given the prompt (heldout_loss).
A model with no tokenizer of its own (the byte-level tiny model) reads bytes
(ByteTokenizer), so the task runs on it too.
"""
from __future__ import annotations

import random
import re
import zlib
from dataclasses import dataclass

import torch

TEST_EVERY = 5          # one problem key in five is held out
SPLITS = ("train", "test")
NAMES = ("Ann", "Ben", "Carla", "Dev", "Emma", "Femi", "Gia", "Hugo", "Ines", "Jon", "Kai", "Lena", "Max", "Nora")
ITEMS = ("apples", "books", "coins", "pencils", "stickers", "marbles", "cookies", "stamps", "shells", "cards")


@dataclass(frozen=True)
class Problem:
    key: str            # "template|a|b|c": decides the split
    question: str
    answer: int

    def prompt(self) -> str:
        return f"Question: {self.question}\nAnswer:"

    def text(self) -> str:
        return f"{self.prompt()} {self.answer}"


def _make(rng: random.Random) -> Problem:
    """One random problem: template t with operands a, b, c, a name and an item."""
    t = rng.randrange(5)
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    if t == 0:
        a, b, c = rng.randint(2, 60), rng.randint(2, 60), 0
        q, ans = f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?", a + b
    elif t == 1:
        b, ans_ = rng.randint(2, 40), rng.randint(1, 40)
        a, c = b + ans_, 0
        q, ans = f"{name} has {a} {item} and gives {b} away. How many {item} are left?", a - b
    elif t == 2:
        a, b, c = rng.randint(2, 12), rng.randint(2, 12), 0
        q, ans = f"{name} buys {a} boxes with {b} {item} in each box. How many {item} is that in total?", a * b
    elif t == 3:
        a, b = rng.randint(5, 50), rng.randint(2, 30)
        c = rng.randint(1, a + b - 1)
        q, ans = (f"{name} has {a} {item}, gets {b} more and then gives {c} away. "
                  f"How many {item} does {name} have?", a + b - c)
    else:
        b, ans_ = rng.randint(2, 9), rng.randint(2, 12)
        a, c = b * ans_, 0
        q, ans = f"{a} {item} are shared equally among {b} friends. How many {item} does each friend get?", a // b
    return Problem(f"{t}|{a}|{b}|{c}", q, ans)


def split_of(key: str) -> str:
    return "test" if zlib.crc32(key.encode()) % TEST_EVERY == 0 else "train"


def problems(split: str, n: int, seed: int) -> list[Problem]:
    """n distinct problems of one split (by key), drawn from a generator seeded with (split, seed)."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is unknown; allowed: {', '.join(SPLITS)}")
    rng = random.Random(f"{split}-{seed}")
    out, seen = [], set()
    for _ in range(200 * n + 1000):
        p = _make(rng)
        if p.key not in seen and split_of(p.key) == split:
            seen.add(p.key)
            out.append(p)
            if len(out) == n:
                return out
    raise ValueError(f"could not draw {n} distinct {split} problems; ask for fewer")


def batch(tokenizer, probs: list[Problem]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask, labels (B, L), right-padded; labels -100 on the prompt and the padding."""
    eos = tokenizer.eos_token_id
    seqs, labs = [], []
    for p in probs:
        prompt = tokenizer(p.prompt(), add_special_tokens=False)["input_ids"]
        full = tokenizer(p.text(), add_special_tokens=False)["input_ids"] + [eos]
        seqs.append(full)
        labs.append([-100] * len(prompt) + full[len(prompt):])
    L = max(map(len, seqs))
    ids = torch.full((len(seqs), L), eos, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    labels = torch.full((len(seqs), L), -100, dtype=torch.long)
    for i, (s, lab) in enumerate(zip(seqs, labs)):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
        labels[i, :len(s)] = torch.tensor(lab)
    return ids, mask, labels


class ByteTokenizer:
    """UTF-8 bytes as token ids, the byte-level tiny model's vocabulary; byte 0 (never in a problem) is eos."""

    eos_token_id = 0

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": list(text.encode("utf-8"))}

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        ids = [int(i) for i in ids]
        return bytes(i for i in ids if not (skip_special_tokens and i == self.eos_token_id)).decode("utf-8", "replace")


def tokenizer_of(tokens) -> object:
    """A task's tokenizer (suites.corpora.Tokens), or bytes where the model has none."""
    return tokens.tokenizer if tokens.tokenizer is not None else ByteTokenizer()


def _left_padded(tokenizer, probs: list[Problem]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """input_ids, attention_mask, labels (B, L) of prompt + answer + eos, LEFT-padded so that every answer
    ends at column L-1; labels -100 outside the answers; and K, the longest answer + eos in tokens."""
    eos = tokenizer.eos_token_id
    seqs, n_ans = [], []
    for p in probs:
        prompt = tokenizer(p.prompt(), add_special_tokens=False)["input_ids"]
        full = tokenizer(p.text(), add_special_tokens=False)["input_ids"] + [eos]
        seqs.append(full)
        n_ans.append(len(full) - len(prompt))
    L = max(map(len, seqs))
    ids = torch.full((len(seqs), L), eos, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    labels = torch.full((len(seqs), L), -100, dtype=torch.long)
    for i, (s, a) in enumerate(zip(seqs, n_ans)):
        ids[i, L - len(s):] = torch.tensor(s)
        mask[i, L - len(s):] = 1
        labels[i, L - a:] = ids[i, L - a:]
    return ids, mask, labels, max(n_ans)


@torch.no_grad()
def heldout_losses(model, tokenizer, probs: list[Problem], batch_size: int = 50) -> list[tuple[float, int]]:
    """Per problem: (summed cross-entropy in nats, tokens) of its answer tokens and eos given its prompt.
    Logits are computed for the last K+1 columns only (logits_to_keep): the vocabulary projection of the
    prompts, most of the tokens, is never made."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(probs), batch_size):
        ids, mask, labels, K = _left_padded(tokenizer, probs[i:i + batch_size])
        pos = (mask.cumsum(-1) - 1).clamp(min=0)            # (B, L): positions count from each prompt's start
        logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                       logits_to_keep=K + 1).logits          # (B, K+1, V): columns L-K-1 .. L-1
        pred = logits[:, :-1].float()                        # (B, K, V): column j predicts token j+1
        target = labels[:, -K:].to(dev)                      # (B, K): the answer tokens and eos, else -100
        nll = torch.nn.functional.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1),
                                                ignore_index=-100, reduction="none").view(target.shape)  # (B, K)
        out += list(zip(nll.sum(1).tolist(), (target != -100).sum(1).tolist()))
    model.train(was_training)
    return out


def heldout_loss(model, tokenizer, probs: list[Problem], batch_size: int = 50) -> float:
    """Cross-entropy (nats/token) of the answer tokens and eos given the prompt: the mean over every such token
    of probs (so it does not depend on batch_size)."""
    return pooled(heldout_losses(model, tokenizer, probs, batch_size))


def pooled(per_problem: list[tuple[float, int]]) -> float:
    """The mean nats/token over the problems' (summed nats, tokens)."""
    return sum(s for s, _ in per_problem) / sum(n for _, n in per_problem)


def first_int(text: str) -> int | None:
    m = re.search(r"-?\d+", text)
    return int(m.group()) if m else None


@torch.no_grad()
def accuracy(model, tokenizer, probs: list[Problem], batch_size: int = 32, max_new: int = 6) -> float:
    """Exact-match accuracy (0..1) of the first integer in the greedy continuation of each prompt."""
    was_training = model.training
    model.eval()
    eos = tokenizer.eos_token_id
    right = 0
    for i in range(0, len(probs), batch_size):
        chunk = probs[i:i + batch_size]
        enc = [tokenizer(p.prompt(), add_special_tokens=False)["input_ids"] for p in chunk]
        L = max(map(len, enc))
        ids = torch.full((len(enc), L), eos, dtype=torch.long)
        mask = torch.zeros((len(enc), L), dtype=torch.long)
        for j, e in enumerate(enc):                 # left padding: every prompt ends at column L-1
            ids[j, L - len(e):] = torch.tensor(e)
            mask[j, L - len(e):] = 1
        dev = next(model.parameters()).device
        out = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), max_new_tokens=max_new,
                             do_sample=False, use_cache=True, pad_token_id=eos)
        for p, row in zip(chunk, out[:, L:]):        # (B, max_new): the continuation only
            right += first_int(tokenizer.decode(row, skip_special_tokens=True)) == p.answer
    model.train(was_training)
    return right / len(probs)
