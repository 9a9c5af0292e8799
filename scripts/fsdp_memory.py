"""Per-rank bytes of state under FSDP2 vs DDP, and what CE-LoRA adds on every rank: suites/fsdp_memory.py.

    python scripts/fsdp_memory.py                      # 2 ranks (nccl with a GPU per rank, else gloo)
    torchrun --nproc-per-node 2 scripts/fsdp_memory.py # the same under torchrun
    python scripts/fsdp_memory.py --analytic-only --model llama-3.1-8b --world 8
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from suites.fsdp_memory import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
