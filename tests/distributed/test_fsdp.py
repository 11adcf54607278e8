"""FSDP2 on 2 CPU ranks (gloo): the prepared graph sharded as one unit trains, syncs and converts
(through unshard_for_convert) to the model DDP gives; per-layer sharding fails as documented."""

import pytest
import torch


@pytest.fixture(scope="module")
def ranks(training_run):
    return [torch.load(training_run / "fsdp" / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_fsdp_ranks_convert_the_same_model(ranks):
    a, b = ranks[0]["fsdp"], ranks[1]["fsdp"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fsdp_converts_to_the_ddp_model(ranks):
    fsdp, ddp = ranks[0]["fsdp"], ranks[0]["ddp"]
    assert fsdp.keys() == ddp.keys()
    torch.testing.assert_close(fsdp["act_qparams"], ddp["act_qparams"], rtol=1e-4, atol=0)
    for k, v in fsdp.items():
        if v.dtype == torch.int8:  # int8 weights: at most one step apart (float summation order)
            assert (v.int() - ddp[k].int()).abs().max() <= 1, k


def test_convert_on_the_sharded_model_names_the_fix(ranks):
    assert "unshard_for_convert" in ranks[0]["convert_error"]


def test_per_layer_sharding_fails_as_documented(ranks):
    assert "mixed torch.Tensor and DTensor" in ranks[0]["per_layer_error"]
