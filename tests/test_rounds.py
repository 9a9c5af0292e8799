"""The sampling design (celora_bench.rounds) and the device-time attribution (timing.kernel_times)."""
import threading
import time

import torch

from celora_bench import timing
from celora_bench.rounds import Sampler, Slot
from celora_bench.timing import TimingBudget

BUDGET = TimingBudget(all_rounds=1, rounds=2, stages=(), block_s=0.001)


def _slots(log):
    """Two groups; group 0 has two components with three providers each, group 1 one component."""
    out = []
    for g, names, provs in ((0, ("a", "b"), ("p", "q", "r")), (1, ("a",), ("p",))):
        for name in names:
            for p in provs:
                out.append(Slot(g, f"{g}/{p}", name, lambda key=(g, name, p): log.append(key)))
    return out


def test_a_round_visits_each_slot_once_with_the_providers_of_a_component_side_by_side():
    log = []
    sampler = Sampler(_slots(log), "cpu", BUDGET, 1, seed=3)
    for _ in range(6):
        before = len(log)
        sampler.round()
        visits = []
        for key in log[before:]:                    # collapse the calls of one block
            if not visits or visits[-1] != key:
                visits.append(key)
        assert sorted(set(visits)) == sorted({(s.group, s.name, s.case_id.split("/")[1]) for s in sampler.slots})
        assert len(visits) == len(sampler.slots)
        blocks = [(g, n) for g, n, _ in visits]
        runs = [blocks[0]] + [b for a, b in zip(blocks, blocks[1:]) if a != b]
        assert len(runs) == len(set(runs))          # each (group, component) once, its providers contiguous
    assert all(s.rounds == list(range(6)) and len(s.samples) == 6 for s in sampler.slots)


def test_the_order_is_randomized_between_rounds_and_reproducible_by_seed():
    def orders(seed):
        s = Sampler(_slots([]), "cpu", BUDGET, 1, seed)
        return [[(x.group, x.name, x.case_id) for duet in s.order(None) for x in duet] for _ in range(5)]
    a = orders(7)
    assert a == orders(7) and len({tuple(o) for o in a}) > 1


def test_a_round_can_be_limited_to_some_series():
    sampler = Sampler(_slots([]), "cpu", BUDGET, 1, seed=0)
    sampler.round()
    keep = {("0/p", "a"), ("0/q", "a")}
    sampler.round(keep)
    assert sampler.slots, 'nothing to check: the loop below would pass vacuously'
    for s in sampler.slots:
        assert s.rounds == ([0, 1] if s.key in keep else [0])


def test_a_cpu_block_fills_its_time_and_a_fixed_block_is_one_call():
    calls = []

    def one_ms():
        calls.append(1)
        time.sleep(0.001)
    per_call = timing.cpu_block(one_ms, 0.01)
    assert len(calls) >= 5 and 0.0009 < per_call < 0.003
    calls.clear()
    timing.cpu_block(one_ms, 10.0, one_call=True)
    assert len(calls) == 1


def test_kernel_time_counts_work_run_on_another_thread():
    """On CUDA autograd runs the backward on its own device thread: work there must be counted in the
    call's device time. On the CPU the same attribution counts an op run on a second thread."""
    a = torch.randn(384, 384)

    def on_another_thread():
        t = threading.Thread(target=lambda: [torch.mm(a, a) for _ in range(20)])
        t.start()
        t.join()

    def here():
        for _ in range(20):
            torch.mm(a, a)

    def python_only():
        time.sleep(0.01)

    elsewhere, local, idle = timing.kernel_times([on_another_thread, here, python_only], "cpu")
    assert local > 0 and idle == 0.0
    assert elsewhere > 0.3 * local            # counted, though not under the calling thread's scope


def test_kernel_time_counts_a_backward_once():
    w = torch.randn(256, 256)

    def fwd_bwd():
        x = torch.randn(256, 256, requires_grad=True)
        (x @ w).sum().backward()

    def fwd():
        x = torch.randn(256, 256)
        return x @ w
    both, forward = timing.kernel_times([fwd_bwd, fwd], "cpu")
    assert both > forward > 0
