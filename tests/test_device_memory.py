"""celora_bench.device_memory.over_chunk_limit: the CPU by RSS, CUDA by the driver's free memory (mocked)."""
import pytest
import torch

from celora_bench import device_memory, memory


def test_cpu_compares_rss_with_the_machines_memory(monkeypatch):
    monkeypatch.setattr(memory, "rss_and_total", lambda: (30, 100))
    assert device_memory.over_chunk_limit("cpu", 0.25)
    assert not device_memory.over_chunk_limit("cpu", 0.4)
    monkeypatch.setattr(memory, "rss_and_total", lambda: (None, None))
    assert not device_memory.over_chunk_limit("cpu", 0.01)         # unknown: never full


def test_cpu_reads_this_process_for_real():
    used, total = memory.rss_and_total()
    if used is None:
        pytest.skip("no /proc here")
    assert device_memory.over_chunk_limit("cpu", used / total / 2)
    assert not device_memory.over_chunk_limit("cpu", 1.0)


def test_cuda_compares_free_memory_with_the_card(monkeypatch):
    asked = []

    def mem_get_info(dev):
        asked.append(dev)
        return 30 * 2**30, 80 * 2**30                              # 30 GiB of 80 free: 62.5% taken
    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    monkeypatch.setattr(memory, "rss_and_total", lambda: (99, 100))   # the host's RSS is not the measure
    assert device_memory.over_chunk_limit("cuda", 0.6)
    assert not device_memory.over_chunk_limit("cuda:1", 0.7)
    assert asked == [torch.device("cuda"), torch.device("cuda:1")]


@pytest.mark.parametrize("bad", [0, -0.1, 1.5])
def test_fraction_is_validated(bad):
    with pytest.raises(ValueError, match="0 < fraction <= 1"):
        device_memory.over_chunk_limit("cpu", bad)
