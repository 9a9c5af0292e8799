"""Data parallelism: score sync across ranks, the backend per machine, and a 2-process DDP model-step run
under torchrun (gloo on the CPU unless the machine has a GPU per rank)."""
import os
import socket
import subprocess
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import core
from celora_bench import distributed, results


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, sync: bool, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)                                  # the same weights on both ranks
    layer = core.CELoRALinear.from_linear(nn.Linear(16, 64), core.CELoRAConfig(
        r=2, keep_ratio=0.25, svd_rank=0, sync_scores=sync))
    scale = torch.ones(64)
    scale[rank * 32:rank * 32 + 16] = 50.0                # each rank's batch has its own hot features
    x = torch.randn(8, 16, requires_grad=True)
    layer(x).backward(torch.randn(8, 64) * scale)
    got = [None, None]
    dist.all_gather_object(got, layer.idx.tolist())
    if rank == 0:
        torch.save(got, os.path.join(out_dir, f"idx-{sync}.pt"))
    dist.destroy_process_group()


def test_ranks_agree_on_the_index_with_score_sync_and_differ_without(tmp_path):
    for sync in (True, False):
        mp.spawn(_rank_main, args=(_free_port(), sync, str(tmp_path)), nprocs=2, join=True)
    on = torch.load(tmp_path / "idx-True.pt")
    off = torch.load(tmp_path / "idx-False.pt")
    assert on[0] == on[1]
    assert off[0] != off[1]


def test_torchrun_ddp_model_step_writes_once_with_per_rank_timings(tmp_path):
    out = str(tmp_path / "ddp.json")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           str(_free_port()), "-m", "celora_bench.cli", "run", "model-step", "--quick", "--batch", "2",
           "--seq", "32", "--threads", "1", "--out", out,
           "--device", distributed.device_for(2)]          # gloo on the CPU unless a GPU per rank
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("results: ") == 1                    # rank 0 alone prints and writes
    run = results.load(out)
    assert run.status == "complete" and run.run["world_size"] == 2
    step = [r for r in run.rows if r.component == "step"]
    assert len(step) == 4
    for r in step:
        per_rank = r.extra["per_rank_samples"]
        assert len(per_rank) == 2 and all(len(s) == 5 for s in per_rank)
        assert list(r.samples) == per_rank[0]


def test_suites_without_ddp_support_refuse_torchrun(tmp_path, monkeypatch, capsys):
    from celora_bench import cli
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(["run", "backward-breakdown", "--out", str(tmp_path / "x.json")]) == 2
    assert "does not run under torchrun" in capsys.readouterr().err


def _gpus(monkeypatch, n: int):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)


def test_ranks_use_nccl_only_with_a_gpu_each(monkeypatch):
    for n, want in ((0, ("gloo", "cpu")), (1, ("gloo", "cpu")), (2, ("nccl", "cuda")), (8, ("nccl", "cuda"))):
        _gpus(monkeypatch, n)
        assert (distributed.backend_for("cuda", 2), distributed.device_for(2)) == want, n
        assert distributed.backend_for("cpu", 2) == "gloo"


def test_two_ranks_on_one_gpu_are_refused_before_joining(monkeypatch):
    _gpus(monkeypatch, 1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    joined = []
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: joined.append(a))
    try:
        distributed.init("cuda")
    except ValueError as e:
        assert "2 ranks, 1 GPU(s); run with --device cpu (gloo)" in str(e)
    else:
        raise AssertionError("init('cuda') with 2 ranks on one GPU must raise")
    assert joined == []


def test_fsdp_memory_picks_the_cpu_on_a_one_gpu_machine(monkeypatch):
    from suites import fsdp_memory
    _gpus(monkeypatch, 1)
    seen = {}
    monkeypatch.setattr(distributed, "init", lambda device: seen.setdefault("device", device) and False)
    monkeypatch.setattr(fsdp_memory, "_measure", lambda mode, plan, cached, device: {"frozen params": 0})
    monkeypatch.setattr(fsdp_memory, "_print_measured", lambda *a: None)
    monkeypatch.setenv("WORLD_SIZE", "2")
    fsdp_memory._rank_main(0, 2, None, None)
    assert seen["device"] == "cpu"
