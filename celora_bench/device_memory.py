"""Is the process holding too much of its device's memory to set up one more group? The runner asks this
before it sets up the next group of a chunk (celora_bench.runner): on the CPU the process's resident memory
against the machine's (celora_bench.memory.rss_and_total); on CUDA the card's free memory as the driver sees
it (torch.cuda.mem_get_info: every allocation of every process, the caching allocator's reserve included),
because a GPU run never holds 40% of the host's RAM while its models fill the card."""
from __future__ import annotations

import torch

from celora_bench import memory


def over_chunk_limit(device: str, fraction: float) -> bool:
    """True when more than `fraction` of the device's memory is taken: CPU, this process's RSS over the
    machine's total (False where /proc cannot tell); CUDA, less than (1 - fraction) of the card free.

    Raises:
        ValueError: fraction is not in (0, 1].
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"over_chunk_limit fraction={fraction} is invalid; allowed: 0 < fraction <= 1")
    if device.startswith("cuda"):
        free, total = torch.cuda.mem_get_info(torch.device(device))
        return free < (1 - fraction) * total
    used, total = memory.rss_and_total()
    return used is not None and total is not None and used > fraction * total
