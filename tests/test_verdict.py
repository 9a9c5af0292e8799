"""What each verdict() computes, on synthetic rows whose right answers are written by hand."""
import pytest

from celora_bench import intervals
from celora_bench.cases import Case, Row
from suites import backward_breakdown as bb
from suites import model_step

M, N_, N = 64, 32, 16          # layer out, in features; tokens


def _case(provider="dense", layer="q_proj", p=1.0, r0=0, cached=False, m=M):
    return Case("backward-breakdown", provider, "toy", layer, m, N_, N, 4, keep_ratio=p, svd_rank=r0,
                cache_rows=cached)


def _row(case, component, t, flops=None, spread=0.0, **extra):
    """Eight samples around t (± spread·t), the FLOPs counted and analytic."""
    samples = tuple(t * (1 + spread * ((i % 3) - 1)) for i in range(8))
    return Row(case, component, samples, flops, flops, extra=extra)


def _dense_rows(case, comp=1.0, whole=2.0, **kw):
    return [_row(case, "bwd.grad_x_frozen", comp, 2 * N * case.m * N_, **kw),
            _row(case, "fwd+bwd", whole, 4 * 2 * N * case.m * N_, **kw),
            _row(case, "bwd.grad_h", 0.01, 2 * N * case.m * case.rank, **kw)]


def _checks(rows, metric_part):
    return [c for c in bb.verdict(rows) if metric_part in c.metric]


@pytest.mark.parametrize("comp,whole,status", [(1.0, 2.0, "PASS"), (1.0, 4.0, "FAIL"), (0.8, 2.0, "NOISE"),
                                               (1.2, 2.0, "FAIL")])
def test_time_share_is_judged_by_its_interval(comp, whole, status):
    (c,) = _checks(_dense_rows(_case(), comp, whole), "time share")
    assert c.value == pytest.approx(comp / whole)
    assert c.lo <= c.value <= c.hi and c.status == status     # 0.40 sits on the line: within noise


def test_flop_share_comes_from_the_counted_flops():
    d = _case()
    rows = [_row(d, "bwd.grad_x_frozen", 1.0, 300), _row(d, "fwd+bwd", 2.0, 1000)]
    (c,) = _checks(rows, "FLOP share")
    assert c.value == pytest.approx(0.3) and c.status == "FAIL" and c.kind == "measured"


def test_block_share_sums_over_layers_before_dividing():
    q, k = _case(layer="q_proj"), _case(layer="k_proj")
    rows = _dense_rows(q, 1.0, 2.0) + _dense_rows(k, 3.0, 6.0)
    block = [c for c in _checks(rows, "time share") if c.scope.startswith("whole block")]
    assert len(block) == 1 and block[0].value == pytest.approx((1.0 + 3.0) / (2.0 + 6.0))


def _celora_rows(case, comp, whole, sel=None, flops=None, k=None, grad_h=0.01):
    k = k or -(-int(case.keep_ratio * case.m * 1000) // 1000)
    r, r0 = case.rank, case.svd_rank
    w = -(-(r + r0) // 16) * 16 if r0 else r                     # the fused [s·B | C] padded to 16 columns
    gh = 2 * N * case.m * w
    f = flops if flops is not None else bb.expected_frozen_flops(N, case.m, N_, k, r, r0) - 2 * N * case.m * (w - r)
    rows = [_row(case, "bwd.grad_x_frozen", comp, f, k=k, k_multiple=1, r0=r0),
            _row(case, "fwd+bwd", whole, None), _row(case, "bwd.grad_h", grad_h, gh)]
    if sel is not None:
        rows.append(_row(case, "selection", sel))
    return rows


def test_cut_to_p_charges_the_amortized_selection():
    d, c = _case(), _case("celora", p=0.5)
    fast = _dense_rows(d) + _celora_rows(c, 0.5, 1.5)
    (r,) = _checks(fast, "time ratio")
    assert r.value == pytest.approx(0.5) and r.status == "PASS" and r.target.startswith("<= 0.575")
    slow_refresh = _dense_rows(d) + _celora_rows(c, 0.5, 1.5, sel=40.0)     # 40 / tau 200 = 0.2 per call
    (r,) = _checks(slow_refresh, "time ratio")
    assert r.value == pytest.approx(0.7) and r.status == "FAIL"
    wide_grad_h = _dense_rows(d) + _celora_rows(c, 0.5, 1.5, grad_h=0.21)   # the fused G_y·C adds 0.2
    (r,) = _checks(wide_grad_h, "time ratio")
    assert r.value == pytest.approx(0.7) and r.status == "FAIL"


def test_amdahl_fraction_uses_the_measured_dense_share():
    d, c = _case(), _case("celora", p=0.5)
    # share s = 1/2, bound 1 / (1 - s + s·p) = 4/3; a CE-LoRA layer of 1.5 is exactly the bound
    (r,) = _checks(_dense_rows(d, 1.0, 2.0) + _celora_rows(c, 0.5, 1.5), "bound")
    assert r.value == pytest.approx(1.0) and r.status == "PASS"
    (r,) = _checks(_dense_rows(d, 1.0, 2.0) + _celora_rows(c, 0.5, 1.8), "bound")
    assert r.value == pytest.approx((2.0 / 1.8) / (4 / 3)) and r.status == "FAIL"


def test_flop_ratio_fails_when_k_stops_shrinking():
    d, c = _case(), _case("celora", p=0.5, r0=2)
    (r,) = _checks(_dense_rows(d) + _celora_rows(c, 0.5, 1.5), "FLOP ratio")
    want = (32 * N_ + 2 * N_ + M * (16 - 4)) / (M * N_)   # k n + r0 n + m·(w − r), w = 4 + 2 padded to 16
    assert r.value == pytest.approx(want) and r.status == "PASS"
    dense_flops = 2 * N * M * N_
    (r,) = _checks(_dense_rows(d) + _celora_rows(c, 0.5, 1.5, flops=dense_flops), "FLOP ratio")
    assert r.value > 1.0 and r.status == "FAIL"                     # the dense product (plus G_y·C) ran
    (r,) = _checks(_dense_rows(d) + _celora_rows(c, 0.5, 1.5, k=M), "FLOP ratio")   # the layer ran k = m
    assert r.status == "FAIL"
    (e,) = _checks(_dense_rows(d) + _celora_rows(c, 0.5, 1.5), "counted = analytic")
    assert e.kind == "exact"


def test_kernel_time_is_judged_on_cuda_with_wall_time_beside_it():
    d = _case()
    rows = [_row(d, "bwd.grad_x_frozen", 1.0, 100, kernel_samples=[0.9] * 5, launch_bound=False),
            _row(d, "fwd+bwd", 8.0, 200, kernel_samples=[2.0] * 5, launch_bound=True)]
    (c,) = _checks(rows, "time share")
    assert c.metric == "time share (kernel)" and c.value == pytest.approx(0.45) and c.status == "PASS"
    assert "wall-time share 0.125" in c.detail and "launch-bound" in c.detail


def test_interval_judge_and_floor():
    iv = intervals.bootstrap(lambda a, b: a / b, [(1.0,) * 6, (2.0,) * 6], [(0, 1)])
    f = intervals.FLOOR                                   # samples without spread: the floor alone
    assert iv.value == 0.5 and iv.lo == pytest.approx(0.5 * (1 - f)) and iv.hi == pytest.approx(0.5 * (1 + f))
    assert iv.judge(0.5 * (1 + 2 * f), above=False) == "PASS" and iv.judge(0.5 * (1 - 2 * f), above=False) == "FAIL"
    assert iv.judge(0.50, above=False) == "NOISE" and iv.judge(0.5 * (1 - 2 * f), above=True) == "PASS"
    noisy = intervals.ratio((1.0, 1.5, 0.7, 1.2, 0.9, 1.4), (1.0,) * 6, paired=True)
    assert noisy.hi - noisy.lo > 0.1


def _step_rows(provider, step_s, step_flops, gx_flops=None):
    case = Case("model-step", provider, "tiny", "model", 8, 8, 16, 4, params=(("batch", 1), ("seq", 16)))
    rows = [Row(case, "step", tuple(step_s * (1 + 0.01 * (i % 3)) for i in range(6)), step_flops, step_flops)]
    if gx_flops is not None:
        rows.append(Row(case, "bwd.grad_x_frozen", (), gx_flops, gx_flops))
    return rows


def test_model_step_pairs_predicted_and_measured_speed_ups():
    rows = (_step_rows("dense", 1.0, 1000, 400) + _step_rows("peft", 1.2, 1000)
            + _step_rows("celora-paper", 0.95, 800) + _step_rows("celora-all", 0.8, 700))
    checks = model_step.verdict(rows)
    by = {(c.check[:2], c.scope.split()[-1], c.metric): c for c in checks}
    assert by[("2.", "celora-paper", "FLOP-predicted")].value == pytest.approx(1000 / 800)
    measured = by[("2.", "celora-paper", "measured")]
    assert measured.value == pytest.approx(1 / 0.95, rel=0.02)
    assert measured.status == "FAIL"          # 1.05 < 0.9 × 1.25, the whole interval below the line
    assert by[("3.", "celora-all", "measured")].value == pytest.approx(1.2 / 0.8, rel=0.02)
    assert by[("3.", "celora-all", "measured")].status == "PASS"
    share = [c for c in checks if c.metric.startswith("FLOP share")][0]
    assert share.value == pytest.approx(0.4)
