"""Index refresh: exactly every tau optimizer steps, never in between; bad input is refused."""
import pytest
import torch
from torch import nn

import core
from core import selection


def make(**kw):
    layer = core.CELoRALinear.from_linear(nn.Linear(16, 32), core.CELoRAConfig(r=2, keep_ratio=0.5, **kw))
    with torch.no_grad():
        layer.lora_B.normal_()
    return layer


def backward(layer, scale=None):
    x = torch.randn(4, 16, requires_grad=True)
    gy = torch.randn(4, 32) * (torch.exp(3 * torch.randn(32)) if scale is None else scale)
    layer(x).backward(gy)


@pytest.mark.parametrize("tau", [1, 3, 5])
def test_refresh_every_tau_steps(tau, monkeypatch):
    layer = make(tau=tau)
    calls = []
    real = selection.select
    monkeypatch.setattr(selection, "select", lambda *a: calls.append(layer.steps) or real(*a))
    for _ in range(12):
        backward(layer)
        backward(layer)            # a second micro-batch: never refreshes
        core.step(layer)
    assert calls == list(range(0, 12, tau))
    assert layer.refresh_count == len(calls)


def test_no_score_topk_or_row_gather_between_refreshes(monkeypatch):
    layer = make(tau=100, cache_rows=True)
    backward(layer)
    for name in ("select", "top_k_index", "column_sq_norms", "residual_rows"):
        monkeypatch.setattr(selection, name, lambda *a: pytest.fail(f"{name} ran between refreshes"))
    for _ in range(3):
        backward(layer)
        core.step(layer)


def test_refresh_index_forces_one_and_optimizer_hook_counts_steps():
    layer = make(tau=1000)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    core.attach_optimizer(opt, layer)
    backward(layer)
    opt.step()
    opt.step()
    assert layer.steps == 2 and layer.refresh_count == 1
    layer.refresh_index()
    backward(layer)
    assert layer.refresh_count == 2 and layer.refreshed_at == 2


def test_index_follows_gradient_under_product_score_only():
    hot = torch.ones(32)
    hot[:8] = 100.0
    cold = torch.ones(32)
    cold[-8:] = 100.0
    prod, resid = make(tau=1), make(tau=1, score="residual_norm")
    for layer in (prod, resid):
        with torch.no_grad():
            resid.weight.copy_(prod.weight)
        backward(layer, hot)
        first = layer.idx.clone()
        core.step(layer)
        backward(layer, cold)
        layer.moved = not torch.equal(first, layer.idx)
    assert prod.moved and not resid.moved


def test_forward_calls_unit_counts_forwards():
    layer = make(tau=2, tau_unit="forward_calls")
    backward(layer)
    with torch.no_grad():
        layer(torch.randn(2, 16))      # an eval forward advances it, as in the reference
    backward(layer)
    core.step(layer)                   # optimizer steps do not
    assert layer.steps == 3 and layer.refresh_count == 2


def test_random_score_is_seeded():
    a, b = make(score="random", seed=3), make(score="random", seed=3)
    backward(a)
    backward(b)
    assert torch.equal(a.idx, b.idx) and a.idx.numel() == 16
    assert torch.equal(a.idx, a.idx.sort().values) and a.idx.unique().numel() == 16


@pytest.mark.parametrize("field,value", [
    ("r", 0), ("alpha", -1.0), ("dropout", 1.0), ("keep_ratio", 0.0), ("keep_ratio", 1.5),
    ("svd_rank", -1), ("tau", 0), ("tau_unit", "epochs"), ("score", "norm"), ("cache_rows", "yes"),
])
def test_bad_config_names_field_and_value(field, value):
    with pytest.raises(ValueError, match=f"{field}={value!r}.*allowed"):
        core.CELoRAConfig(**{field: value})


def test_mismatched_input_is_refused():
    layer = make()
    with pytest.raises(ValueError, match="last dimension 15 does not match in_features 16"):
        layer(torch.randn(3, 15))
    with pytest.raises(ValueError, match="dtype"):
        layer(torch.randn(3, 16, dtype=torch.float64))


def test_kept_is_ceil_and_dense_needs_no_selection():
    cfg = core.CELoRAConfig(keep_ratio=0.55)
    assert cfg.kept(512) == 282 and cfg.kept(2048) == 1127
    dense = core.CELoRALinear.from_linear(nn.Linear(16, 32), core.CELoRAConfig(r=2))
    assert dense.dense and dense.B0 is None and dense.res_sq is None
    backward(dense)
    assert dense.idx is None and dense.refresh_count == 0
