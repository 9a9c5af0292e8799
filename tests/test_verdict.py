"""What each verdict() computes, on synthetic rows whose right answers are written by hand."""
import pytest

from celora_bench import intervals
from celora_bench.cases import Case, Row
from suites import backward_breakdown as bb
from suites import model_step

M, N_, N = 64, 32, 16          # layer out, in features; tokens
ROUNDS = 12


def _case(provider="dense", layer="q_proj", p=1.0, r0=0, cached=False, m=M, device="cpu", dtype="float32"):
    return Case("backward-breakdown", provider, "toy", layer, m, N_, N, 4, keep_ratio=p, svd_rank=r0,
                cache_rows=cached, device=device, dtype=dtype)


def _row(case, component, t, flops=None, spread=0.0, phase=0, **extra):
    """One sample per round around t (± spread·t, in a pattern shifted by phase), FLOPs counted = analytic."""
    samples = tuple(t * (1 + spread * (((i + phase) % 3) - 1)) for i in range(ROUNDS))
    return Row(case, component, samples, flops, flops, extra=extra, rounds=tuple(range(ROUNDS)))


def _dense_rows(case, comp=1.0, whole=2.0, spread=0.0):
    return [_row(case, "bwd.grad_x_frozen", comp, 2 * N * case.m * N_, spread),
            _row(case, "fwd+bwd", whole, 4 * 2 * N * case.m * N_, spread, phase=1),
            _row(case, "bwd.grad_h", 0.01, 2 * N * case.m * case.rank)]


def _checks(rows, metric_part):
    return [c for c in bb.checks.verdict(rows) if metric_part in c.metric]


@pytest.mark.parametrize("comp,whole,status", [(1.0, 2.0, "PASS"), (1.0, 4.0, "FAIL"), (0.8, 2.0, "NOISE"),
                                               (1.2, 2.0, "FAIL")])
def test_time_share_is_judged_by_its_interval_between_rounds(comp, whole, status):
    (c,) = _checks(_dense_rows(_case(), comp, whole, spread=0.03), "time share")
    assert c.value == pytest.approx(comp / whole, rel=0.01)
    assert c.lo < c.value < c.hi and c.status == status and c.rounds == ROUNDS  # 0.40 on the line: within noise
    assert c.kind == "measured" and set(c.reads) == {(_case().id, "bwd.grad_x_frozen"), (_case().id, "fwd+bwd")}
    if status == "NOISE":
        assert "undecided: interval" in c.detail and "wider than its distance" in c.detail


def test_flop_share_is_context_not_a_check():
    d = _case()
    rows = [_row(d, "bwd.grad_x_frozen", 1.0, 300), _row(d, "fwd+bwd", 2.0, 1000)]
    assert not _checks(rows, "FLOP share")
    (c,) = _checks(rows, "time share")
    assert "FLOP share 0.300 (counted, context)" in c.detail


def test_block_share_weights_each_shape_by_its_projections():
    qo, k = _case(layer="q_proj+o_proj"), _case(layer="k_proj")
    rows = _dense_rows(qo, 1.0, 2.0) + _dense_rows(k, 3.0, 10.0)
    block = [c for c in _checks(rows, "time share") if c.scope.startswith("whole block")]
    assert len(block) == 1 and block[0].value == pytest.approx((2 * 1.0 + 3.0) / (2 * 2.0 + 10.0))


def _celora_rows(case, comp, whole, sel=None, flops=None, k=None, grad_h=0.01, spread=0.0):
    k = k or -(-int(case.keep_ratio * case.m * 1000) // 1000)
    r, r0 = case.rank, case.svd_rank
    w = -(-(r + r0) // 16) * 16 if r0 else r                     # the fused [s·B | C] padded to 16 columns
    gh = 2 * N * case.m * w
    f = (flops if flops is not None
         else bb.rules.expected_frozen_flops(N, case.m, N_, k, r, r0) - 2 * N * case.m * (w - r))
    rows = [_row(case, "bwd.grad_x_frozen", comp, f, spread, phase=2, k=k, k_multiple=1, r0=r0),
            _row(case, "fwd+bwd", whole, None, spread, phase=2), _row(case, "bwd.grad_h", grad_h, gh)]
    if sel is not None:
        rows.append(_row(case, "selection", sel))
    return rows


def test_cut_to_p_charges_the_amortized_selection_and_the_fused_product():
    d, c = _case(), _case("celora", p=0.5)
    fast = _dense_rows(d) + _celora_rows(c, 0.5, 1.5)
    (r,) = _checks(fast, "time ratio")
    assert r.value == pytest.approx(0.5) and r.status == "PASS" and r.target.startswith("<= 0.575")
    slow_refresh = _dense_rows(d) + _celora_rows(c, 0.5, 1.5, sel=40.0)     # 40 / tau 200 = 0.2 per call
    (r,) = _checks(slow_refresh, "time ratio")
    assert r.value == pytest.approx(0.7) and r.status == "FAIL"
    assert (c.id, "selection") in r.reads and (d.id, "bwd.grad_h") in r.reads
    wide_grad_h = _dense_rows(d) + _celora_rows(c, 0.5, 1.5, grad_h=0.21)   # the fused G_y·C adds 0.2
    (r,) = _checks(wide_grad_h, "time ratio")
    assert r.value == pytest.approx(0.7) and r.status == "FAIL"


def test_amdahl_fraction_uses_the_measured_dense_share_and_charges_the_selection():
    d, c = _case(), _case("celora", p=0.5)
    # share s = 1/2, bound 1 / (1 - s + s·p) = 4/3; a CE-LoRA layer of 1.5 is exactly the bound
    (r,) = _checks(_dense_rows(d, 1.0, 2.0) + _celora_rows(c, 0.5, 1.5), "bound")
    assert r.value == pytest.approx(1.0) and r.status == "PASS"
    (r,) = _checks(_dense_rows(d, 1.0, 2.0) + _celora_rows(c, 0.5, 1.8), "bound")
    assert r.value == pytest.approx((2.0 / 1.8) / (4 / 3)) and r.status == "FAIL"
    (r,) = _checks(_dense_rows(d, 1.0, 2.0) + _celora_rows(c, 0.5, 1.5, sel=60.0), "bound")  # +0.3 per call
    assert r.value == pytest.approx((2.0 / 1.8) / (4 / 3)) and "selection charged" in r.detail


@pytest.mark.parametrize("device,dtype,r0,line", [("cpu", "float32", 0, 0.95), ("cpu", "float32", 14, 0.95),
                                                   ("cuda", "bfloat16", 0, 0.90), ("cuda:1", "bfloat16", 14, 0.85)])
def test_the_amdahl_line_is_the_devices_one_that_gpu_targets_reads_too(device, dtype, r0, line):
    """One table (suites.lines) for backward-breakdown's check 3 and gpu-targets' layers section: a layer at
    0.93 of its bound PASSes a 0.90 or 0.85 line and FAILs a 0.95 one, in both suites alike."""
    from suites import lines
    assert lines.amdahl_line(device, r0) == line
    shape = dict(m=1024, device=device, dtype=dtype)          # k = 512: a multiple of CUDA's 64 too
    d, c = _case(**shape), _case("celora", p=0.5, r0=r0, **shape)
    rows = _dense_rows(d, 1.0, 2.0) + _celora_rows(c, 0.5, 2.0 / (0.93 * 4 / 3))
    (r,) = _checks(rows, "bound")
    assert r.target == f">= {line:.2f}" and r.value == pytest.approx(0.93)
    assert r.status == ("PASS" if line < 0.93 else "FAIL")


@pytest.mark.parametrize("p,start,noise", [(0.5, 0.98, 0.01), (0.25, 0.97, 0.005)])
def test_a_20_percent_slower_ce_lora_g_y_w0_fails_the_amdahl_check(p, start, noise):
    """Falsifiable: a layer at `start` of its bound passes (0.96-0.98 measured here); make CE-LoRA's G_y·W0
    20% slower (the layer's fwd+bwd grows by the same seconds) and the same rows fail. At p = 0.5 +20% of
    the component moves the layer by ~6% (seen through 1% noise per series and round); at p = 0.25 the
    component is small and moves it by ~3.5% (seen through 0.5%)."""
    d, c = _case(), _case("celora", p=p)
    s = 0.45                                                     # the dense share, as measured here
    bound = 1 / (1 - s + s * p)
    comp = 1.1 * p * s                                           # CE-LoRA's G_y·W0 at 1.1·p of dense's
    whole = 1 / (start * bound)
    ok = _dense_rows(d, s, 1.0, spread=noise) + _celora_rows(c, comp, whole, spread=noise)
    (r,) = _checks(ok, "bound")
    assert r.value == pytest.approx(start, rel=0.01) and r.status == "PASS"
    slow = _dense_rows(d, s, 1.0, spread=noise) + _celora_rows(c, 1.2 * comp, whole + 0.2 * comp, spread=noise)
    (r,) = _checks(slow, "bound")
    assert r.status == "FAIL", r


def test_the_configured_p_is_judged_not_the_k_the_layer_ran():
    d, c = _case(), _case("celora", p=0.5, r0=2)
    (e,) = [x for x in bb.checks.verdict(_dense_rows(d) + _celora_rows(c, 0.5, 1.5)) if x.kind == "exact"
            and x.scope.startswith("q_proj N=")]
    want = (32 * N_ + 2 * N_ + M * (16 - 4)) / (M * N_)   # k n + r0 n + m·(w − r), w = 4 + 2 padded to 16
    assert e.value == pytest.approx(want) and e.status == "PASS"
    fallback = _dense_rows(d) + _celora_rows(c, 1.0, 2.0, k=M, flops=2 * N * M * N_)   # the layer ran k = m
    checks = bb.checks.verdict(fallback)
    (e,) = [x for x in checks if x.kind == "exact" and x.scope.startswith("q_proj N=")]
    assert e.status == "FAIL" and "k run 64, rule 32" in e.detail
    (r,) = [x for x in checks if "time ratio" in x.metric]
    assert r.status == "FAIL" and r.target.startswith("<= 0.575")          # judged at the configured p
    (a,) = [x for x in checks if "bound" in x.metric]
    assert "bound 1.333" in a.detail


def test_k_rule_is_written_apart_from_core():
    assert bb.rules.k_rule(_case("celora", p=0.55, m=1000))[0] == 550
    assert bb.rules.k_rule(_case("celora", p=0.55, m=1000, device="cuda", dtype="bfloat16")) == (576, 64)
    assert bb.rules.k_rule(_case("celora", p=0.55, m=1000, device="cuda:1", dtype="float32")) == (560, 16)
    assert bb.rules.k_rule(_case("celora", p=0.99, m=1000, device="cuda", dtype="bfloat16")) == (1000, 64)


def test_every_case_gets_one_exact_check_and_counts_keep_them_apart():
    from celora_bench.render.view import verdict_counts
    d, c = _case(), _case("celora", p=0.5)
    checks = bb.checks.verdict(_dense_rows(d, spread=0.03) + _celora_rows(c, 0.5, 1.5, spread=0.03))
    exact = [x for x in checks if x.kind == "exact"]
    assert len(exact) == 2 and all(x.status == "PASS" for x in exact)
    timed = [x for x in checks if x.kind == "measured"]
    text = verdict_counts(checks)
    assert text.startswith(f"{len(timed)} timed: ") and "2 exact (all pass)" in text


def test_kernel_time_is_judged_on_cuda_with_wall_time_beside_it():
    d = _case()
    k = dict(kernel_rounds=list(range(ROUNDS)))
    rows = [_row(d, "bwd.grad_x_frozen", 1.0, 100, kernel_samples=[0.9] * ROUNDS, launch_bound=False, **k),
            _row(d, "fwd+bwd", 8.0, 200, kernel_samples=[2.0] * ROUNDS, launch_bound=True, **k)]
    (c,) = _checks(rows, "time share")
    assert c.metric == "time share (kernel)" and c.value == pytest.approx(0.45) and c.status == "PASS"
    assert "wall-time share 0.125" in c.detail and "launch-bound" in c.detail


def test_a_file_from_before_rounds_is_not_paired():
    d = _case()
    rows = [Row(d, "bwd.grad_x_frozen", (1.0, 1.1), 100, 100), Row(d, "fwd+bwd", (2.0, 2.1), 200, 200)]
    checks = bb.checks.verdict(rows)
    assert [c.kind for c in checks] == ["info", "exact"] and "re-measure" in checks[0].detail
    with pytest.raises(intervals.Unpaired):
        intervals.paired_ratio(rows[0].series, rows[1].series)


def test_interval_judge():
    iv = intervals.Interval(0.5, 0.45, 0.55, 8)
    assert iv.judge(0.56, above=False) == "PASS" and iv.judge(0.44, above=False) == "FAIL"
    assert iv.judge(0.50, above=False) == "NOISE" and iv.judge(0.44, above=True) == "PASS"
    assert iv.within(0.4, 0.6) == "PASS" and iv.within(0.56, 0.9) == "FAIL" and iv.within(0.5, 0.9) == "NOISE"


def _step_rows(provider, step_s, step_flops, gx_flops=None):
    case = Case("model-step", provider, "tiny", "model", 8, 8, 16, 4, params=(("batch", 1), ("seq", 16)))
    rows = [Row(case, "step", tuple(step_s * (1 + 0.01 * (i % 3)) for i in range(6)), step_flops, step_flops,
                rounds=tuple(range(6)))]
    if gx_flops is not None:
        rows.append(Row(case, "bwd.grad_x_frozen", (), gx_flops, gx_flops))
    return rows


def test_model_step_pairs_predicted_and_measured_speed_ups():
    rows = (_step_rows("dense", 1.0, 1000, 400) + _step_rows("peft", 1.2, 1000)
            + _step_rows("celora-paper", 0.95, 800) + _step_rows("celora-all", 0.8, 700))
    checks = model_step.checks.verdict(rows)
    by = {(c.check.id, c.scope.split()[-1], c.metric): c for c in checks}
    assert by[("vs-dense", "celora-paper", "FLOP-predicted")].value == pytest.approx(1000 / 800)
    measured = by[("vs-dense", "celora-paper", "measured")]
    assert measured.value == pytest.approx(1 / 0.95, rel=0.02)
    assert measured.status == "FAIL"          # 1.05 < 0.9 × 1.25, the whole interval below the line
    assert by[("vs-peft", "celora-all", "measured")].value == pytest.approx(1.2 / 0.8, rel=0.02)
    assert by[("vs-peft", "celora-all", "measured")].status == "PASS"
    share = [c for c in checks if c.metric.startswith("FLOP share")][0]
    assert share.value == pytest.approx(0.4)


@pytest.mark.parametrize("device,gather_s,status", [("cuda", 0.2, "PASS"), ("cuda", 0.3, "FAIL"),
                                                    ("cpu", 0.3, "INFO")])
def test_the_kept_column_product_is_judged_on_the_devices_line(device, gather_s, status):
    """(gather + product) / dense G_y·W0 / p_eff, paired by round: at most 1.25 on CUDA (suites.lines, the GPU
    target), reported on the CPU. (0.2 + 0.4) / 1.0 / 0.5 = 1.2; (0.3 + 0.4) / 1.0 / 0.5 = 1.4."""
    d, c = _case(device=device), _case("celora", p=0.5, device=device)
    rows = _dense_rows(d) + [_row(c, "detail.gather", gather_s), _row(c, "detail.kept_product", 0.4)]
    (k,) = [x for x in bb.checks.verdict(rows) if x.check is bb.checks.KEPT_CHECK]
    assert k.value == pytest.approx((gather_s + 0.4) / 0.5) and k.status == status
    assert k.kind == ("info" if device == "cpu" else "measured") and k.lo is not None
    assert (c.id, "detail.gather") in k.reads and (d.id, "bwd.grad_x_frozen") in k.reads
