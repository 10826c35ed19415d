"""Settings every test shares."""

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One intra-op thread for the whole suite: the test machines have 2 cores shared with other
    work, where torch's default of 2 threads spin-waits and runs these tiny models 3-10x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
