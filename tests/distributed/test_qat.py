"""Distributed QAT on 2 CPU ranks (gloo, torchrun, DDP): one set of qparams and weights on every rank.

One launch runs the same 10-step QAT of a conv-bn-dropout-linear digits model three ways:
`wrap_ddp` + `QATSchedule` (freezes BN, then observers) + `sync_observers`, and the two
naive wrappings: `DistributedDataParallel(pm)` (rank 0's buffers broadcast each step) and
`broadcast_buffers=False` (each rank keeps its own). The naive ones are the counter-test:
their ranges and converted models depend on the rank.
"""

import pytest
import torch

NAIVE = ("naive_broadcast", "naive_no_broadcast")


@pytest.fixture(scope="module")
def ranks(training_run):
    return [torch.load(training_run / "qat" / f"rank{r}.pt", weights_only=False) for r in range(2)]


def _differing(a: dict, b: dict) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


def test_every_rank_holds_the_same_weights_and_qparams(ranks):
    a, b = ranks[0]["ours"], ranks[1]["ours"]
    assert not _differing(a["prepared"], b["prepared"])  # weights, observers, fake-quant scales, BN stats
    assert not _differing(a["converted"], b["converted"])  # int8 weights, scales, activation qparams
    assert len(a["converted"]["act_qparams"]) >= 3


def test_synced_convert_does_not_warn(ranks):
    assert not ranks[0]["ours"]["warned"] and not ranks[1]["ours"]["warned"]


@pytest.mark.parametrize("variant", NAIVE)
def test_naive_ddp_gives_rank_dependent_ranges(ranks, variant):
    """The trap the issue describes, measured: no error, different models per rank."""
    a, b = ranks[0][variant], ranks[1][variant]
    assert _differing(a["ranges"], b["ranges"]), f"{variant}: ranks agree; the counter-test shows nothing"
    assert not torch.equal(a["converted"]["act_qparams"], b["converted"]["act_qparams"])
    assert "bn.running_mean" in _differing(a["prepared"], b["prepared"])
    # the weights themselves agree (DDP averages gradients): only the statistics diverge
    weights = [k for k in a["prepared"] if k.endswith(".weight") or k.endswith(".bias")]
    assert weights and not set(weights) & set(_differing(a["prepared"], b["prepared"]))


@pytest.mark.parametrize("variant", NAIVE)
def test_convert_warns_about_unsynced_observers(ranks, variant):
    assert ranks[0][variant]["warned"] and ranks[1][variant]["warned"]
