"""Shared test settings.

The test models are tiny: their many small tensor ops run fastest on one intra-op thread, and
extra threads only stall each other on a 2-core machine. OMP_NUM_THREADS also reaches the scripts
the tests start as subprocesses.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def seeded():
    """Every test starts from the same global RNG state, whatever ran before it."""
    torch.manual_seed(0)
    yield
