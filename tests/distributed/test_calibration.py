"""Distributed calibration on 2 CPU ranks (gloo, torchrun): the qparams of one process over the union.

One launch; each rank calibrates digits batches of its own half with every activation
observer; rank 0 also computes the single-process references (tests/distributed/_workers.py).
"""

import pytest
import torch

from tests.distributed._launch import run_worker

OBSERVERS = ("minmax", "percentile", "moving_average", "histogram")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("calibration")
    run_worker("calibration", out)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.parametrize("observer", OBSERVERS)
def test_every_rank_converts_the_same_model(ranks, observer):
    a, b = ranks[0][observer]["converted"], ranks[1][observer]["converted"]
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{observer}: ranks converted different tensors {differ}"


def test_minmax_equals_one_process_over_the_union(ranks):
    r0 = ranks[0]["minmax"]
    assert r0["qparams"] == r0["single_qparams"]  # exactly: scales and zero points
    for name, (lo, hi) in r0["ranges"].items():
        shards = torch.stack([s[name] for s in r0["per_shard_ranges"]])
        assert lo == shards[:, 0].min() and hi == shards[:, 1].max(), name


def test_the_shards_really_differ(ranks):
    """Otherwise the minmax test above could pass without any reduction."""
    r0 = ranks[0]["minmax"]
    differ = [n for n in r0["ranges"] if not torch.equal(*(s[n] for s in r0["per_shard_ranges"]))]
    assert differ, "both ranks' shards give the same ranges: the test data does not exercise the sync"


def test_percentile_equals_one_process_over_the_union(ranks):
    r0 = ranks[0]["percentile"]
    for (s, z), (s_ref, z_ref) in zip(r0["qparams"], r0["single_qparams"], strict=True):
        assert z == z_ref and s == pytest.approx(s_ref, rel=1e-6), (s, s_ref)


def test_moving_average_is_the_mean_of_the_ranks(ranks):
    r0 = ranks[0]["moving_average"]
    for name, got in r0["ranges"].items():
        mean = torch.stack([s[name] for s in r0["per_shard_ranges"]]).double().mean(0)
        torch.testing.assert_close(got.double(), mean, rtol=1e-6, atol=1e-7, msg=name)


def test_histogram_matches_the_union_within_its_binning(ranks):
    """The merged histogram's qparams are those of one observer that saw all data at once (the
    exact histogram) up to 2 of its 2048 bins at each end of the clipping range: the scale within
    4 bins / 255, the zero point within 1. torchao's own sequential merge was 26 bins off here."""
    r0 = ranks[0]["histogram"]
    for name, ((s_ref, z_ref), min_val, max_val, count) in r0["exact"].items():
        s, z = r0["merged"][name]
        bin_width = (max_val - min_val) / 2048
        assert abs(s.item() - s_ref.item()) <= 4 * bin_width / 255 and abs(z.item() - z_ref.item()) <= 1, (
            f"{name}: merged scale {s.item():.6g} zp {z.item()} vs exact {s_ref.item():.6g} zp {z_ref.item()}")
        merged_min, merged_max, hist = r0["hist"][name]
        assert (merged_min, merged_max) == (min_val, max_val)  # the common range is the union's
        assert hist.sum().item() == pytest.approx(count, rel=1e-6)  # no value lost or doubled


@pytest.mark.parametrize(("case", "words"), [("weights", "different weights in 0.weight"),
                                             ("graph", "prepared models differ")])
def test_ranks_that_disagree_get_a_clear_error_not_a_hang(ranks, case, words):
    for r in ranks:
        assert r["errors"][case] is not None and words in r["errors"][case], r["errors"][case]
