"""model-step on the tiny model: counted FLOPs against the analytic model, providers agree, verdict;
one cheap low-rank split per weight shape (never the exact SVD); models built on the device in the dtype."""
import pytest
import torch

from celora_bench import models, results, runner
from celora_bench.suite import Options, budget_for
from core import selection
from core.flops import COMPONENTS
from suites import causal_lm, factors, model_step

BUDGET = budget_for("quick")
SVD_CALLS: list[tuple] = []    # (shape, r0) of every factors.lowrank_split call during the module's run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ms") / "ms.json")
    real = factors.lowrank_split

    def counted(W0, r0):
        SVD_CALLS.append((tuple(W0.shape), r0))
        return real(W0, r0)

    def exact(W0, r0):
        raise AssertionError("model-step timed with the exact SVD")
    model_step._SVD.update(key=None, cache={})             # no factors from an earlier test's run
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(factors, "lowrank_split", counted)
        mp.setattr(selection, "svd_split", exact)
        mp.setattr(model_step, "_FACTORS", factors.per_shape())
        return runner.run(["model-step"], Options(mode="quick", batch=2, seq=32), path)


def _rows(run, provider):
    return {r.component: r for r in run.rows if r.case.provider == provider}


def test_every_provider_measured_with_phases_and_memory(run):
    assert run.status == "complete", run.errors
    for prov in ("peft", "dense", "celora-paper", "celora-all"):
        rows = _rows(run, prov)
        for phase in ("fwd", "fwd+bwd", "optimizer", "step"):       # the phases: every round of the breakdown
            assert rows[phase].time.count >= BUDGET.all_rounds and rows[phase].mem_bytes is not None
        assert rows["step"].time.count >= BUDGET.rounds                # the verdict reads the step
        assert rows["state"].mem_bytes > 0


@pytest.mark.parametrize("provider", ["dense", "celora-paper", "celora-all"])
def test_counted_flops_match_the_analytic_model(run, provider):
    rows = _rows(run, provider)
    for c in COMPONENTS:
        assert rows[c].flops_counted == rows[c].flops_analytic, c
    assert rows["rest"].flops_counted == rows["rest"].flops_analytic     # attention + lm_head
    assert rows["step"].flops_counted == rows["step"].flops_analytic     # FlopCounterMode total


def test_peft_and_our_dense_lora_do_the_same_work(run):
    assert _rows(run, "peft")["step"].flops_counted == _rows(run, "dense")["step"].flops_counted
    assert _rows(run, "celora-all")["bwd.grad_x_frozen"].flops_counted < \
        _rows(run, "dense")["bwd.grad_x_frozen"].flops_counted


def test_verdict_has_the_model_level_checks(run):
    checks = results.load(run.path).verdicts["model-step"]
    names = {c["check"] for c in checks}
    assert {"share", "vs-dense", "vs-peft"} <= names
    share = next(c for c in checks if c["metric"] == "FLOP share (counted)")
    assert 0.2 < share["value"] < 0.6


def test_celora_presets_split_once_per_weight_shape(run):
    # the tiny model's shapes: q/k/v/o 256x256, gate/up 688x256, down 256x688; one low-rank split each
    assert sorted(c for c in SVD_CALLS if c[1]) == [((256, 256), 14), ((256, 688), 14), ((688, 256), 14)]


def test_models_are_built_on_the_device_in_the_dtype(monkeypatch):
    seen = {}
    real = models.build_model

    def spy(name, **kw):
        model = real(name, **kw)
        p = next(model.parameters())
        seen.update(device=p.device, dtype=p.dtype)
        return model
    monkeypatch.setattr(models, "build_model", spy)
    model = causal_lm.build("tiny", torch.device("meta"), torch.bfloat16)
    assert seen == {"device": torch.device("meta"), "dtype": torch.bfloat16}     # as built, before any move
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert torch.get_default_dtype() == torch.float32


def test_counted_flops_match_the_analytic_model_in_the_fused_form(tmp_path, monkeypatch):
    """The form CUDA runs by default (core.config.GRAD_X_FORM), forced on the CPU: the analytic model
    follows each layer's resolved form and k multiple."""
    from core import config
    monkeypatch.setitem(config.GRAD_X_FORM, "cpu", "fused")
    run = runner.run(["model-step"], Options(mode="quick", batch=2, seq=32), str(tmp_path / "f.json"),
                     filt=["celora-all"])
    rows = _rows(run, "celora-all")
    assert run.status == "complete", run.errors
    assert rows["bwd.grad_x_lora"].flops_counted == 0                  # G_h·A runs inside the one GEMM
    for c in COMPONENTS:
        assert rows[c].flops_counted == rows[c].flops_analytic, c
