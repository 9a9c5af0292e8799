"""core.traffic's gather model per device: the minimum on the CPU, sector-granular reads on CUDA, checked
against a direct count of the 32-byte sectors that sorted random columns touch."""
import math

import pytest
import torch

from core import traffic
from core.traffic import INDEX_BYTES, SECTOR_BYTES, column_gather_bytes, column_read_bytes, layer_bytes


def _sectors_touched(m: int, idx: torch.Tensor, b: int) -> int:
    """Distinct 32-byte sectors of one row that the columns idx fall in (the row starts on a sector)."""
    return len(set((idx * b // SECTOR_BYTES).tolist()))


@pytest.mark.parametrize("m,p,b", [(4096, 0.5, 2), (14336, 0.65, 2), (14336, 0.25, 2), (4096, 0.1, 4),
                                   (1024, 0.02, 2)])
def test_cuda_reads_the_sectors_sorted_random_columns_touch(m, p, b):
    k = math.ceil(p * m)
    g = torch.Generator().manual_seed(0)
    counts = [_sectors_touched(m, torch.randperm(m, generator=g)[:k].sort().values, b) for _ in range(20)]
    direct = sum(counts) / len(counts) * SECTOR_BYTES                    # bytes per row, measured
    model = column_read_bytes(b, 1000, m, k, "cuda") / 1000
    assert model == pytest.approx(direct, rel=0.03)


def test_at_half_the_columns_cuda_reads_the_whole_row_and_the_cpu_the_minimum():
    N, m, k, b = 8192, 4096, 2048, 2
    assert column_read_bytes(b, N, m, k, "cpu") == b * N * k
    assert column_read_bytes(b, N, m, k, "cuda") == pytest.approx(b * N * m, rel=1e-4)
    full = column_gather_bytes(b, N, m, k, "cuda")
    assert full == pytest.approx(b * N * m + b * N * k + INDEX_BYTES * k, rel=1e-4)
    assert full / column_gather_bytes(b, N, m, k, "cpu") == pytest.approx(1.5, rel=1e-3)   # (m + k) / 2k
    assert column_read_bytes(b, N, m, m, "cuda") == b * N * m and column_read_bytes(b, N, m, 0, "cuda") == 0


def test_layer_bytes_uses_the_model_of_its_device():
    N, m, n, r, k, b = 8192, 14336, 4096, 16, 7168, 2
    cpu = layer_bytes(N, m, n, r, k=k, b=b)
    cuda = layer_bytes(N, m, n, r, k=k, b=b, device="cuda")
    extra = column_read_bytes(b, N, m, k, "cuda") - b * N * k
    assert cuda["detail.gather"] - cpu["detail.gather"] == extra > 0
    assert cuda["bwd.grad_x_frozen"] - cpu["bwd.grad_x_frozen"] == extra
    assert cuda["detail.kept_product"] == cpu["detail.kept_product"]
    fused_cpu = layer_bytes(N, m, n, r, k=k, b=b, form="fused")
    assert layer_bytes(N, m, n, r, k=k, b=b, form="fused", device="cuda")["bwd.grad_x_frozen"] \
        - fused_cpu["bwd.grad_x_frozen"] == extra
    assert layer_bytes(N, m, n, r, b=b, device="cuda") == layer_bytes(N, m, n, r, b=b)   # dense: no gather
    with pytest.raises(ValueError, match="device='tpu' is invalid"):
        layer_bytes(N, m, n, r, k=k, device="tpu")


def test_module_bytes_takes_the_device_of_the_weight(monkeypatch):
    import core
    layer = core.CELoRALinear.from_linear(torch.nn.Linear(96, 128, bias=False),
                                          core.CELoRAConfig(r=4, keep_ratio=0.5, svd_rank=0))
    got = {}
    monkeypatch.setattr(traffic, "layer_bytes", lambda *a, **kw: got.update(kw) or {})
    traffic.module_bytes(layer, 64, 4)
    assert got["device"] == "cpu"


def test_the_separate_gather_floor_on_an_h100():
    # n = 4096, p = 0.5, bf16, H100 SXM roofs: the gather alone costs ~0.22·p over a perfect kept product
    floor = traffic.separate_gather_floor(4096, 0.5, 2, 989e12, 3.35e12)
    assert floor == pytest.approx(1.216, abs=2e-3)
    assert traffic.separate_gather_floor(14336, 0.5, 2, 989e12, 3.35e12) < 1.07      # down_proj's n: small
