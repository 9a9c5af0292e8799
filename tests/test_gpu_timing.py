"""celora_bench.timing.count_events on a CUDA-like profile built by hand (no GPU here): device-side kernel events
in each call's window, annotations and profiler bookkeeping left out (though host ops carry their device time),
Triton kernels with no host op kept, and the host-linked part beside it as the cross-check."""
from types import SimpleNamespace

import pytest
import torch
from torch.autograd import DeviceType

from celora_bench import timing
from celora_bench.timing import REP_SCOPE, KernelCount, count_events

_ids = iter(range(1, 10_000))


def _host(name, start, end, parent=None, device_us=0.0, kind="cpu_op"):
    return SimpleNamespace(name=name, device_type=DeviceType.CPU, activity_type=kind, is_async=False,
                           time_range=SimpleNamespace(start=start, end=end), cpu_parent=parent, id=next(_ids),
                           device_time_total=device_us, cpu_time_total=end - start, linked_correlation_id=0)


def _kernel(name, start, end, launched_by=None, kind="kernel"):
    return SimpleNamespace(name=name, device_type=DeviceType.CUDA, activity_type=kind, is_async=False,
                           time_range=SimpleNamespace(start=start, end=end), cpu_parent=None, id=0,
                           device_time_total=end - start, cpu_time_total=0,
                           linked_correlation_id=launched_by.id if launched_by is not None else 0)


def _profile():
    """Two calls (0-100 us and 200-300 us, each followed by a synchronize). Call 0: a forward op on the
    calling thread and a backward op on autograd's device thread (no parent), whose kernel runs after the
    scope closes; call 1: one op and a Triton kernel launched through the driver API (linked to nothing);
    plus the profiler's bookkeeping carrying 1.2 ms of device time and a device-side annotation."""
    rep0, rep1 = _host(f"{REP_SCOPE}.0", 0, 100, kind="user_annotation"), \
        _host(f"{REP_SCOPE}.1", 200, 300, kind="user_annotation")
    fwd = _host("aten::mm", 10, 20, rep0, device_us=30)
    bwd = _host("autograd::engine::evaluate_function: MmBackward0", 40, 60, None, device_us=50)
    bwd_child = _host("aten::mm", 41, 59, bwd)
    op1 = _host("aten::addmm", 210, 220, rep1, device_us=20)
    book = _host("Activity Buffer Request", 50, 51, None, device_us=1200, kind="overhead")
    step = _host("ProfilerStep#0", 0, 300, None, device_us=1200)
    sync = _host("cudaDeviceSynchronize", 101, 150, None, kind="cuda_runtime")
    events = [rep0, rep1, fwd, bwd, bwd_child, op1, book, step, sync,
              _kernel("ampere_gemm", 20, 50, fwd),
              _kernel("ampere_gemm_bwd", 90, 140, bwd_child),                 # ends after the scope: still call 0
              _kernel("gather_cols", 230, 240),                                # Triton: no host op
              _kernel("ampere_gemm", 250, 270, op1),
              _kernel(f"{REP_SCOPE}.0", 0, 150, kind="gpu_user_annotation"),  # an annotation: no work
              _kernel("Activity Buffer Request", 60, 80, kind="overhead")]
    return events


def test_device_side_count_keeps_every_kernel_of_the_window_and_no_bookkeeping():
    c0, c1 = count_events(_profile(), 2, cuda=True)
    assert c0.seconds == pytest.approx(80e-6)          # 30 (forward) + 50 (backward, on another thread)
    assert c1.seconds == pytest.approx(30e-6)          # 10 (Triton, unlinked) + 20
    assert c1.unlinked_s == pytest.approx(10e-6) and c0.unlinked_s == 0
    assert c0.host_s == pytest.approx(80e-6)           # fwd + bwd; bookkeeping's 1.2 ms left out
    assert c1.host_s == pytest.approx(20e-6)           # the Triton kernel has no host op
    assert c0.agrees() and c1.agrees()


def test_a_kernel_of_one_call_running_in_the_next_calls_window_breaks_the_cross_check():
    events = _profile()
    fwd = next(e for e in events if e.name == "aten::mm" and e.cpu_parent is not None)
    events.append(_kernel("late_gemm", 205, 215, fwd))              # launched in call 0, ran in call 1's window
    c0, c1 = count_events(events, 2, cuda=True)
    assert c1.seconds == pytest.approx(40e-6) and c0.host_s == pytest.approx(90e-6)
    assert not c0.agrees() and not c1.agrees()


def test_the_cross_check_within_its_tolerance():
    assert KernelCount(seconds=1.0, host_s=0.8, unlinked_s=0.2).agrees()
    assert KernelCount(seconds=1.0, host_s=0.99, unlinked_s=0.0).agrees()
    assert not KernelCount(seconds=1.0, host_s=1.2).agrees() and not KernelCount(seconds=1.0, host_s=0.5).agrees()


def test_without_activity_types_annotations_are_still_not_work():
    events = _profile()
    for e in events:
        e.activity_type = None
        e.is_user_annotation = e.name.startswith(REP_SCOPE)
    c0, _ = count_events(events, 2, cuda=True)
    assert c0.seconds == pytest.approx(80e-6)          # the gpu annotation (150 us) and the overhead left out


def test_kernel_times_and_counts_agree_on_the_cpu():
    a, b = torch.randn(128, 128), torch.randn(128, 128)
    fns = [lambda: a @ b, lambda: None]
    counts = timing.kernel_counts(fns, "cpu")
    assert counts[0].seconds > 0 and counts[1].seconds == 0
    assert all(c.host_s == c.seconds and c.unlinked_s == 0 for c in counts)
    assert len(timing.kernel_times(fns, "cpu")) == 2
