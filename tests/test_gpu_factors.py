"""suites.factors: cheap double-LoRA factors for the timing suites, against the exact SVD."""
import pytest
import torch

from core import selection
from suites import factors


def _decaying(m, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(m, m, generator=g))[0]
    V = torch.linalg.qr(torch.randn(n, n, generator=g))[0]
    s = torch.logspace(0, -3, min(m, n))
    return (U[:, :len(s)] * s) @ V[:, :len(s)].T


@pytest.mark.parametrize("m,n,r0", [(96, 64, 14), (64, 200, 3)])
def test_lowrank_split_is_close_to_the_exact_one_in_shape_dtype_and_residual(m, n, r0):
    W = _decaying(m, n).to(torch.bfloat16)
    B, A = factors.lowrank_split(W, r0)
    Be, Ae = selection.svd_split(W, r0)
    assert B.shape == Be.shape == (m, r0) and A.shape == Ae.shape == (r0, n)
    assert B.dtype == A.dtype == torch.bfloat16 and B.is_contiguous() and A.is_contiguous()
    res = (W.float() - B.float() @ A.float()).norm()
    exact = (W.float() - Be.float() @ Ae.float()).norm()
    assert res <= exact * 1.05 + 1e-3


def test_lowrank_split_leaves_the_random_state_and_r0_0():
    W = torch.randn(40, 30)
    state = torch.get_rng_state()
    factors.lowrank_split(W, 4)
    assert torch.equal(state, torch.get_rng_state())
    assert factors.lowrank_split(torch.randn(40, 30), 0) == (None, None)


def test_per_shape_splits_once_per_shape():
    calls = []
    split = factors.per_shape(lambda W, r0: calls.append((tuple(W.shape), r0)) or (W[:, :r0], W[:r0]))
    a, b, c = torch.randn(8, 6), torch.randn(8, 6), torch.randn(6, 8)
    assert split(a, 2)[0] is split(b, 2)[0]                 # the second weight of a shape gets the first's
    split(c, 2)
    split(a, 3)
    assert calls == [((8, 6), 2), ((6, 8), 2), ((8, 6), 3)]


def test_model_step_converts_with_cheap_factors_once_per_shape(monkeypatch):
    import suites.model_step as ms
    from celora_bench import models
    exact = []
    monkeypatch.setattr(selection, "svd_split", lambda *a: exact.append(a) or (_ for _ in ()).throw(AssertionError))
    seen = []
    monkeypatch.setattr(ms, "_FACTORS", factors.per_shape(lambda W, r0: seen.append(tuple(W.shape)) or
                                                          factors.lowrank_split(W, r0)))
    model = ms.build("tiny", "cpu", torch.float32)
    ms.apply(model, "celora-all", {}, ms._FACTORS)
    assert exact == [] and len(seen) == len(set(seen)) <= len(models.get("tiny").layer_shapes())
