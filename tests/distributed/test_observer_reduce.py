"""The reduce rules, in one process: N simulated ranks, each an observer copy fed its own shard.

A tiny driver plays torch.distributed's all-reduce between the copies, so every rule is
checked against one observer that saw all shards, for each observer kind, quickly. The
real collectives run in the 2-rank tests beside this file.
"""

import pytest
import torch
from torchao.quantization.pt2e import (
    FakeQuantize,
    FusedMovingAvgObsFakeQuantize,
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
    PlaceholderObserver,
)

import pt2e_int8 as q
from pt2e_int8.observer_reduce import rebin_histogram, register_reducer, rule_for
from pt2e_int8.observers import PercentileObserver

INT8 = {"dtype": torch.int8, "quant_min": -128, "quant_max": 127}


def simulate_sync(observers: list) -> None:
    """Run each copy's rule in lock-step, reducing requests across copies like all_reduce does."""
    rules = [rule_for(o, f"rank{r}")(o) for r, o in enumerate(observers)]
    requests = []
    for rule in rules:
        try:
            requests.append(next(rule))
        except StopIteration:
            requests.append(None)
    while any(r is not None for r in requests):
        live = [r for r in requests if r is not None]
        assert len(live) == len(requests) and len({op for op, _ in live}) == 1, "ranks diverged"
        op = live[0][0]
        reduced = [torch.stack([ts[i].double() for _, ts in live]) for i in range(len(live[0][1]))]
        reduced = [(t.max(0).values if op == "max" else t.sum(0)) for t in reduced]
        nxt = []
        for rule, (_, ts) in zip(rules, live, strict=True):
            try:
                nxt.append(rule.send([r.to(t.dtype) for r, t in zip(reduced, ts, strict=True)]))
            except StopIteration:
                nxt.append(None)
        requests = nxt


def shards(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    # different scales and offsets per shard, so per-rank ranges really differ
    return [[torch.randn(16, 8, generator=g) * (1 + r) + r for _ in range(4)] for r in range(n)]


def feed(observer, batches):
    for b in batches:
        observer(b)
    return observer


@pytest.mark.parametrize("cls", [MinMaxObserver, PerChannelMinMaxObserver], ids=["per-tensor", "per-channel"])
def test_min_max_equals_one_observer_over_the_union(cls):
    kwargs = {**INT8, "ch_axis": 1} if cls is PerChannelMinMaxObserver else INT8
    data = shards()
    ranks = [feed(cls(**kwargs), d) for d in data]
    union = feed(cls(**kwargs), [b for d in data for b in d])
    simulate_sync(ranks)
    for o in ranks:
        assert torch.equal(o.min_val, union.min_val) and torch.equal(o.max_val, union.max_val)
        assert all(torch.equal(a, b) for a, b in zip(o.calculate_qparams(), union.calculate_qparams(), strict=True))


def test_an_observer_that_saw_nothing_takes_the_others_range():
    data = shards(2)
    ranks = [feed(MinMaxObserver(**INT8), data[0]), MinMaxObserver(**INT8)]
    simulate_sync(ranks)
    assert torch.equal(ranks[1].min_val, ranks[0].min_val) and torch.isfinite(ranks[1].max_val)


@pytest.mark.parametrize("cls", [MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver])
def test_moving_average_is_the_mean_of_the_ranks(cls):
    kwargs = {**INT8, "ch_axis": 1} if cls is MovingAveragePerChannelMinMaxObserver else INT8
    ranks = [feed(cls(**kwargs), d) for d in shards()]
    expected_lo = torch.stack([o.min_val for o in ranks]).double().mean(0)
    # a per-tensor rank that saw nothing (±inf) does not drag the mean (a per-channel one has
    # no channels yet: sync_observers refuses that layout before reducing)
    simulate_sync(ranks + ([cls(**kwargs)] if cls is MovingAverageMinMaxObserver else []))
    for o in ranks:
        torch.testing.assert_close(o.min_val.double(), expected_lo, rtol=1e-6, atol=1e-7)


def test_percentile_equals_one_observer_over_the_union():
    data = shards()
    ranks = [feed(PercentileObserver(percentile=99.0, **INT8), d) for d in data]
    union = feed(PercentileObserver(percentile=99.0, **INT8), [b for d in data for b in d])
    simulate_sync(ranks)
    for o in ranks:
        torch.testing.assert_close(o.min_val, union.min_val, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(o.max_val, union.max_val, rtol=1e-6, atol=1e-7)
        assert int(o.batches_seen) == 12


def test_histogram_merges_into_the_union_range_within_two_bins():
    data = shards()
    ranks = [feed(HistogramObserver(**INT8), d) for d in data]
    exact = feed(HistogramObserver(**INT8), [torch.cat([b for d in data for b in d])])
    simulate_sync(ranks)
    s_ref, z_ref = exact.calculate_qparams()
    width = (exact.max_val - exact.min_val).item() / exact.bins
    for o in ranks:
        assert torch.equal(o.min_val, exact.min_val) and torch.equal(o.max_val, exact.max_val)
        assert o.histogram.sum().item() == pytest.approx(exact.histogram.sum().item(), rel=1e-6)
        s, z = o.calculate_qparams()  # clipping range within 2 bins at each end
        assert abs(s - s_ref).item() <= 4 * width / 255 and abs(z - z_ref).item() <= 1, (s, z, s_ref, z_ref)


def test_rebin_preserves_counts_and_places_them():
    hist = torch.tensor([1.0, 2.0, 3.0, 4.0])
    out = rebin_histogram(hist, 0.0, 4.0, 0.0, 8.0)  # each new bin covers two old ones
    assert torch.allclose(out, torch.tensor([3.0, 7.0, 0.0, 0.0]))
    out = rebin_histogram(hist, 0.0, 4.0, -4.0, 4.0)
    assert torch.allclose(out, torch.tensor([0.0, 0.0, 3.0, 7.0]))
    point = rebin_histogram(torch.tensor([5.0, 0, 0, 0]), 1.0, 1.0, 0.0, 4.0)  # a single value, 5 times
    assert torch.allclose(point, torch.tensor([0.0, 5.0, 0.0, 0.0]))


@pytest.mark.parametrize("fused", [True, False], ids=["fused-moving-average", "fake-quantize-minmax"])
def test_fake_quant_scale_follows_its_reduced_observer(fused):
    def make():
        if fused:
            return FusedMovingAvgObsFakeQuantize(observer=MovingAverageMinMaxObserver, **INT8)
        return FakeQuantize(observer=MinMaxObserver, **INT8)

    ranks = [feed(make(), d) for d in shards()]
    assert len({o.scale.item() for o in ranks}) == 3  # each rank trained with its own grid
    simulate_sync(ranks)
    scale, zero_point = ranks[0].calculate_qparams()
    for o in ranks:
        assert torch.equal(o.scale, scale) and torch.equal(o.zero_point, zero_point.to(o.zero_point.dtype))


def test_stateless_observers_ask_for_nothing():
    obs = PlaceholderObserver(dtype=torch.int8)
    assert list(rule_for(obs, "activation_post_process_0")(obs)) == [], "a stateless observer sent a collective"
    before = {k: v.clone() for k, v in obs.state_dict().items()}
    simulate_sync([obs, PlaceholderObserver(dtype=torch.int8)])
    assert obs.state_dict().keys() == before.keys()
    assert all(torch.equal(obs.state_dict()[k], v) for k, v in before.items())


def test_an_observer_without_a_rule_is_a_clear_error():
    class Custom(torch.nn.Module):
        pass

    with pytest.raises(q.ConfigError, match="register_reducer"):
        rule_for(Custom(), "activation_post_process_3")
    with pytest.raises(ValueError, match="already has a reduce rule"):
        register_reducer(MinMaxObserver)(lambda obs: iter(()))


def test_wrap_ddp_refuses_broadcast_buffers_and_needs_a_process_group():
    pm = q.prepare_qat(torch.nn.Sequential(torch.nn.Linear(4, 2)), (torch.randn(2, 4),))
    with pytest.raises(q.ConfigError, match="broadcast_buffers"):
        q.wrap_ddp(pm, broadcast_buffers=True)
    with pytest.raises(q.DistributedError, match="torchrun"):
        q.wrap_ddp(pm)


def test_sync_is_a_no_op_in_one_process():
    obs = feed(MinMaxObserver(**INT8), shards(1)[0])
    before = obs.min_val.clone()
    pm = torch.nn.Module()
    pm.obs = obs
    assert q.sync_observers(pm) is pm and torch.equal(obs.min_val, before)
