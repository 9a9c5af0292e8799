import pytest
import torch


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


# Tolerances per dtype: (atol, rtol).
TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (2e-4, 2e-4),
       torch.bfloat16: (5e-2, 5e-2), torch.float16: (1e-2, 1e-2)}
