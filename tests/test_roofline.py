"""Speed of light: analytic bytes by hand, the calibration's peaks, and the roofline arithmetic."""
import math

import pytest

from celora_bench import roofline
from core.traffic import INDEX_BYTES, layer_bytes

N, m, n, r, k, r0 = 8, 6, 5, 2, 3, 1


def test_bytes_of_every_component_by_hand():
    """Each operand read once, each result written once, 4-byte floats; in-place accumulations read their
    output too; gathers read and write what they move plus 8-byte indices."""
    b = 4
    d = layer_bytes(N, m, n, r, b=b)
    assert d["fwd.frozen"] == b * (N * n + m * n + N * m)
    assert d["fwd.lora"] == b * (N * n + r * n + N * r) + b * (N * r + r * m + 2 * N * m)
    assert d["bwd.grad_h"] == b * (N * m + m * r + N * r)
    assert d["bwd.grad_B"] == b * (r * N + N * m + r * m)
    assert d["bwd.grad_A"] == b * (r * N + N * n + r * n)
    assert d["bwd.grad_x_lora"] == b * (N * r + r * n + 2 * N * n)
    assert d["bwd.grad_x_frozen"] == b * (N * m + m * n + N * n)
    gather_gy = 2 * b * N * k + INDEX_BYTES * k
    kept_mm = b * (N * k + k * n + N * n)
    t_a0 = b * (N * r0 + r0 * n + 2 * N * n)
    lean = layer_bytes(N, m, n, r, k=k, r0=r0, b=b)
    w = 16                                       # r = 2 up to 8, + r0 = 1, up to 16 (core.components)
    assert lean["bwd.grad_h"] == b * (N * m + m * w + N * w)
    assert lean["bwd.grad_x_frozen"] == gather_gy + (2 * b * k * n + INDEX_BYTES * k) + kept_mm + t_a0
    cached = layer_bytes(N, m, n, r, k=k, r0=r0, cache_rows=True, b=b)
    assert cached["bwd.grad_x_frozen"] == gather_gy + kept_mm + t_a0          # no W0 row gather
    assert cached["selection"] - lean["selection"] == b * (2 * k * n + k * r0 + r0 * n) - b * 2 * m * r0
    assert lean["detail.gather"] == gather_gy and lean["detail.kept_product"] == kept_mm
    half = layer_bytes(N, m, n, r, k=k, r0=r0, b=2)
    assert half["fwd.frozen"] * 2 == d["fwd.frozen"]


def test_the_fused_form_moves_one_gemm_and_the_copies_into_it():
    b = 4
    f = layer_bytes(N, m, n, r, k=k, r0=r0, form="fused", b=b)
    K = 24                                       # w = 16, + k = 3, up to 8
    assert f["bwd.grad_x_lora"] == 0
    assert f["bwd.grad_x_frozen"] == ((2 * b * N * k + INDEX_BYTES * k) + (2 * b * k * n + INDEX_BYTES * k)
                                      + 2 * b * (r0 + r) * n + b * (N * K + K * n + N * n))
    with pytest.raises(ValueError, match="form='x'"):
        layer_bytes(N, m, n, r, k=k, form="x")


def test_calibration_stores_positive_finite_peaks():
    p = roofline.calibrate("cpu", "float32", 1, gemm_n=256, stream_bytes=8 << 20, reps=3)
    assert all(math.isfinite(v) and v > 0 for v in (p.flops_per_s, p.bytes_per_s))
    assert len(p.gemm_samples_s) == len(p.copy_samples_s) == len(p.triad_samples_s) == 3
    back = roofline.Peaks.from_json(p.to_json())
    assert back == p and p.published is None


def test_roofline_point_picks_the_binding_roof():
    peaks = roofline.Peaks("cpu", "float32", 2, 100e9, 10e9, 0, (), 0, (), ())
    assert roofline.ridge(peaks) == 10.0
    mem = roofline.point(flops=10**9, nbytes=10**9, seconds=0.2, peaks=peaks)      # intensity 1 < ridge 10
    assert mem.roof == "memory" and mem.sol == pytest.approx((1e9 / 0.2) / 10e9)
    comp = roofline.point(flops=10**11, nbytes=10**9, seconds=2.0, peaks=peaks)    # intensity 100
    assert comp.roof == "compute" and comp.sol == pytest.approx(0.5)
    gather = roofline.point(flops=0, nbytes=10**9, seconds=0.25, peaks=peaks)
    assert gather.roof == "memory" and gather.sol == pytest.approx(0.4) and gather.intensity == 0.0


def test_calibrate_command_prints_the_roofs_and_its_sanity_check(capsys, monkeypatch):
    """The command's logic (not the machine's speed): a fake calibration whose GEMM check lands inside and
    outside 0.5-1.1 of the roof."""
    from celora_bench import cli

    def fake(device, dtype, threads, gemm_n, flops):
        """The run's calibration (no gemm_n given) at 200 GFLOP/s, the check's GEMM at `flops`."""
        return roofline.Peaks(device, dtype, 2, 200e9 if gemm_n is None else flops, 20e9, gemm_n or 2048,
                              (0.1,), 1, (0.1,), (0.1,))
    monkeypatch.setattr(roofline, "calibrate", lambda d, t, th, gemm_n=None, **kw: fake(d, t, th, gemm_n, 150e9))
    assert cli.main(["calibrate", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "200.0 GFLOP/s" in out and "= 0.75 of the compute roof" in out and "PASS" in out
    monkeypatch.setattr(roofline, "calibrate", lambda d, t, th, gemm_n=None, **kw: fake(d, t, th, gemm_n, 50e9))
    assert cli.main(["calibrate", "--device", "cpu"]) == 1
    assert "FAIL" in capsys.readouterr().out


def _roof_rows(gemm_s, stream_s):
    from celora_bench.cases import Case, Row
    big = Case("backward-breakdown", "dense", "m", "gate_proj", 64, 32, 16, 4)
    small = Case("backward-breakdown", "dense", "m", "q_proj", 32, 32, 16, 4)
    return [Row(big, roofline.ROOF_GEMM, tuple(gemm_s), flops_analytic=2 * 16 * 64 * 32),
            Row(small, roofline.ROOF_GEMM, (1.0,), flops_analytic=2 * 16 * 32 * 32),
            Row(big, roofline.ROOF_STREAM, tuple(stream_s), flops_analytic=0, extra={"bytes_analytic": 2000})]


def test_roofs_measured_in_the_rounds_are_the_best_sample_over_the_run():
    """The best of every round and every shape, not one calibration at the start: a slow start (a neighbour
    busy then) does not lower the roof."""
    peaks = roofline.peaks_in(_roof_rows([0.004, 0.001, 0.002], [0.01, 0.002]), {"roofline": {"error": "x"}})
    assert peaks.flops_per_s == pytest.approx(2 * 16 * 64 * 32 / 0.001)
    assert peaks.bytes_per_s == pytest.approx(2000 / 0.002)
    assert roofline.peaks_in([], {}) is None                        # no roof rows, no calibration: none


def test_a_compute_bound_component_over_the_roof_is_a_calibration_error():
    """A dense G_y·W0 running at 2x the measured compute roof is not 200% SOL: the verdict says the roof was
    measured too low, as a failed consistency check, and prints no SOL for it."""
    from celora_bench.cases import Case, Row
    from suites.backward_breakdown import checks

    d = Case("backward-breakdown", "dense", "m", "gate_proj", 64, 32, 16, 4)
    c = Case("backward-breakdown", "celora", "m", "gate_proj", 64, 32, 16, 4, keep_ratio=0.5)
    fl = 2 * 16 * 64 * 32
    peaks = roofline.Peaks("cpu", "float32", 2, fl / 0.002, 1e12, 64, (), 0, (), ())
    idx = {(d.id, "bwd.grad_x_frozen"): Row(d, "bwd.grad_x_frozen", (0.001,) * 3, fl,
                                            extra={"bytes_analytic": 4 * (16 * 64 + 64 * 32 + 16 * 32)}),
           (c.id, "detail.kept_product"): Row(c, "detail.kept_product", (0.0015,) * 3, fl // 2,
                                               extra={"bytes_analytic": 10_000}),
           (c.id, "detail.gather"): Row(c, "detail.gather", (0.0001,) * 3, 0, extra={"bytes_analytic": 2048})}
    out = checks._sol_checks(idx, c, d, peaks)
    bad = [x for x in out if x.status == "FAIL"]
    assert len(bad) == 1 and "calibration error" in bad[0].detail and bad[0].value == pytest.approx(2.0)
    assert not any(x.metric == "SOL dense G_y·W0" for x in out)
    assert any(x.metric == "SOL kept-column product" and x.status == "INFO" for x in out)
