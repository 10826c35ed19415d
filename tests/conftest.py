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


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected what will not run
def pytest_collection_modifyitems(config, items):
    """The test files that use the sample pipeline's checkpoints run last, and when other tests
    run before them, the pipeline is built meanwhile in a second process (on the second core)."""
    import post_training_fixtures

    files = {item.path for item in items}
    last = {path for path in files if post_training_fixtures.uses_sample_pipeline(path)}
    if last and last != files and not config.option.collectonly:
        items[:] = [item for item in items if item.path not in last] + [
            item for item in items if item.path in last
        ]
        post_training_fixtures.build_in_background()
