"""Suite-wide test settings."""
import pytest
import torch

import crucible  # noqa: F401  with CRUCIBLE_CPU_KERNELS=avx2, pins the CPU kernels before any test computes


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """The suite's models are tiny: on a shared 2-core machine a second intra-op thread only adds
    contention (measured 10-250x slower under load). Subprocesses (the smoke DAG) set their own."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
