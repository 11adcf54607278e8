"""One torchrun launch shared by the training tests (QAT variants, FSDP, the uninterrupted
checkpointed run): interpreter and torch start-up are most of what a launch costs."""

import pytest

from tests.distributed._launch import run_worker


@pytest.fixture(scope="session")
def training_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("training")
    run_worker("training", out)
    return out
