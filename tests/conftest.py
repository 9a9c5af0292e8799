import os

import pytest
import torch

# Runs in tests measure in-process (their monkeypatches reach the code measured, and a run starts in a
# second instead of six worker start-ups); tests/test_workers.py sets its own worker counts.
os.environ["CELORA_BENCH_WORKERS"] = "1"


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


# Tolerances per dtype: (atol, rtol).
TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (2e-4, 2e-4),
       torch.bfloat16: (5e-2, 5e-2), torch.float16: (1e-2, 1e-2)}
