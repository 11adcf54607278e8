"""Calibration and QAT on several processes (torchrun + DDP or FSDP2): one set of qparams on every rank.

Why: observer ranges and batch-norm running statistics are module buffers, and each rank
fills them from its own shard of the data. DistributedDataParallel's default
(`broadcast_buffers=True`) copies rank 0's buffers over every other rank's before each
forward, so the converted scales come from rank 0's shard plus one step of the rank's
own; with `broadcast_buffers=False` every rank drifts to its own ranges. Neither raises:
the converted model is just worse, and differs by rank (tests/distributed, the
counter-test).

What we do instead: training leaves the buffers alone (`wrap_ddp`: no broadcast), and
`sync_observers` reduces them with the rule each observer needs (`observer_reduce`) at the
points where they matter: at the end of `calibrate`, when a `QATSchedule` freezes
batch-norm statistics or observers, when a QAT checkpoint is saved, and before `convert`.
Moving averages (QAT observers, batch-norm statistics) are linear in the per-step values,
so one reduction at those points equals reducing every step, without a collective in
every forward (bench/distributed_qat.py measures both).
"""

from __future__ import annotations

import warnings
import zlib

import torch
import torch.distributed as dist
from torch import nn
from torch.fx import GraphModule
from torch.nn.parallel import DistributedDataParallel
from torchao.quantization.pt2e import FakeQuantizeBase, ObserverBase

from pt2e_int8.errors import ConfigError, DistributedError
from pt2e_int8.observer_reduce import REDUCE_OPS, reduce_mean, rule_for
from pt2e_int8.qat import BN_TRAINING_ARG, bn_stats_frozen

_SYNC_ATTR = "_pt2e_int8_sync"  # "synced" | "stale"; absent: never synced
_HOOKED_ATTR = "_pt2e_int8_sync_hooked"


def is_distributed(group=None) -> bool:
    """True under an initialized process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def _observers(gm: nn.Module) -> list[tuple[str, nn.Module]]:
    """Top-level observers / fake-quants (a fake-quant's inner observer is its rule's business)."""
    found, inside = [], set()
    for name, mod in gm.named_modules():
        if isinstance(mod, ObserverBase | FakeQuantizeBase) and not any(name.startswith(p) for p in inside):
            found.append((name, mod))
            inside.add(name + ".")
    return found


def _batch_norm_stats(gm: nn.Module) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, running_mean, running_var) of every batch-norm node of an exported graph."""
    graph = getattr(gm, "graph", None)
    out = []
    for node in graph.nodes if graph is not None else ():
        if node.op == "call_function" and node.target in BN_TRAINING_ARG and len(node.args) > 4:
            mean, var = node.args[3], node.args[4]
            if getattr(mean, "op", None) == "get_attr" and getattr(var, "op", None) == "get_attr":
                out.append((mean.target, gm.get_buffer(mean.target), gm.get_buffer(var.target)))
    return out


def _replicated_params(gm: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Parameters every rank holds in full (FSDP2 shards are DTensors and differ by design)."""
    from torch.distributed.tensor import DTensor

    return [(n, p) for n, p in gm.named_parameters() if not isinstance(p, DTensor)]


_SAME_SIZE_INT = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits_sum(p: torch.Tensor) -> torch.Tensor:
    """Sum of the tensor's bit patterns as integers: exact and order-free, so ranks with the
    same weights agree whatever their thread counts or reduction order."""
    bits = p.detach().contiguous().view(_SAME_SIZE_INT[p.element_size()])
    return bits.sum(dtype=torch.int64).reshape(1)


def _check_same_weights(params: list[tuple[str, torch.Tensor]]):
    """Qparams merged over ranks only make sense for one model: the ranks' weights must agree."""
    sums = [_bits_sum(p) for _, p in params]
    reduced = yield "max", tuple(t for s in sums for t in (s, -s))
    differ = [name for (name, _), hi, neg_lo in zip(params, reduced[::2], reduced[1::2], strict=True)
              if not torch.equal(hi, -neg_lo)]
    if differ:
        raise DistributedError(
            f"The ranks hold different weights in {', '.join(differ[:8])}"
            f"{' …' if len(differ) > 8 else ''}. Observer statistics can only be merged for one model: "
            "load the same checkpoint on every rank (DDP and wrap_ddp broadcast rank 0's weights when they wrap)."
        )


def _signature(gm, observers, bn, params) -> list:
    return ([(n, type(m).__qualname__, [(b, tuple(t.shape)) for b, t in m.named_buffers()])
             for n, m in observers]
            + [(n, tuple(mean.shape)) for n, mean, _ in bn] + [(n, tuple(p.shape)) for n, p in params])


def _check_same_structure(signature: list, device, group) -> None:
    """One tiny all-reduce so that ranks with different graphs fail clearly instead of hanging."""
    h = zlib.crc32(repr(signature).encode())
    t = torch.tensor([h, -h], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    if t[0] == -t[1]:
        return
    everyone = [None] * dist.get_world_size(group)
    dist.all_gather_object(everyone, signature, group=group)
    diff = next(((r, a, b) for r, theirs in enumerate(everyone)
                 for a, b in zip(everyone[0], theirs, strict=False) if a != b), None)
    where = f" First difference, rank 0 vs rank {diff[0]}: {diff[1]} vs {diff[2]}." if diff else ""
    raise DistributedError(
        "The ranks' prepared models differ (observers, buffer shapes or parameters), so their statistics "
        f"cannot be merged.{where} Every rank must prepare the same model with the same quantizer and "
        "example inputs, and run at least one batch before syncing; pass sync=False to keep ranks separate."
    )


def _all_reduce_flat(tensors: list[torch.Tensor], op: str, device, group) -> list[torch.Tensor]:
    """All-reduce many small tensors as one buffer per kind: float64 for floats, int64 (exact) for integers."""
    out: list[torch.Tensor | None] = [None] * len(tensors)
    for is_float, dtype in ((True, torch.float64), (False, torch.int64)):
        picked = [i for i, t in enumerate(tensors) if t.is_floating_point() == is_float]
        if not picked:
            continue
        flat = torch.cat([tensors[i].detach().reshape(-1).to(device, dtype) for i in picked])
        dist.all_reduce(flat, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM, group=group)
        at = 0
        for i in picked:
            t = tensors[i]
            out[i] = flat[at:at + t.numel()].reshape(t.shape).to(t.dtype)
            at += t.numel()
    return out


def _run_rules(rules: list, device, group) -> None:
    """Advance every rule in lock-step: per round, one all-reduce per op over all requests."""
    pending = []
    for rule in rules:
        try:
            pending.append((rule, next(rule)))
        except StopIteration:
            pass
    while pending:
        results = {}
        for op in REDUCE_OPS:
            asked = [t for _, (o, ts) in pending if o == op for t in ts]
            results[op] = iter(_all_reduce_flat(asked, op, device, group))
        still = []
        for rule, (op, ts) in pending:
            try:
                still.append((rule, rule.send([next(results[op]) for _ in ts])))
            except StopIteration:
                pass
        pending = still


def sync_observers(gm: nn.Module, *, group=None) -> nn.Module:
    """Reduce observer statistics and batch-norm running statistics over the ranks, in place.

    Every rank must call it (a collective). Afterwards each rank holds the same qparams:
    min/max observers as one process over all ranks' data, moving averages averaged,
    histograms merged into a common range, percentile bounds batch-weighted (see
    `pt2e_int8.observer_reduce`). Also checks that every rank holds the same weights.
    A no-op outside torch.distributed or with a single rank.

    Args:
        gm: a prepared (PTQ or QAT) GraphModule; a DDP wrapper's `.module` or an FSDP2 root.
        group: the process group (default: the world).

    Returns:
        gm, for chaining.

    Example:
        q.sync_observers(pm)      # on every rank
        if dist.get_rank() == 0: export_pte(q.convert(pm), ...)
    """
    if isinstance(gm, DistributedDataParallel):
        gm = gm.module
    if not is_distributed(group):
        return gm
    observers, bn, params = _observers(gm), _batch_norm_stats(gm), _replicated_params(gm)
    device = next((t.device for t in [*gm.buffers(), *gm.parameters()]), torch.device("cpu"))
    _check_same_structure(_signature(gm, observers, bn, params), device, group)
    world = dist.get_world_size(group)
    rules = [_check_same_weights(params)]
    rules += [rule_for(mod, name)(mod) for name, mod in observers]
    rules += [reduce_mean(mean, var, world_size=world) for _, mean, var in bn]
    with torch.no_grad():
        _run_rules(rules, device, group)
    mark_synced(gm)
    return gm


def mark_synced(gm: nn.Module) -> None:
    """Record that every rank holds the same statistics (e.g. all loaded one checkpoint)."""
    setattr(gm, _SYNC_ATTR, "synced")
    _hook_staleness(gm)


def _hook_staleness(gm: nn.Module) -> None:
    if getattr(gm, _HOOKED_ATTR, False):
        return

    def mark(module, args):
        if getattr(module, _SYNC_ATTR, None) == "synced":
            setattr(module, _SYNC_ATTR, "stale")

    gm.register_forward_pre_hook(mark)
    setattr(gm, _HOOKED_ATTR, True)


def _still_updating(gm: nn.Module) -> bool:
    """Would another forward change statistics that convert reads?"""
    for _, mod in _observers(gm):
        if isinstance(mod, FakeQuantizeBase):
            if mod.observer_enabled.any():
                return True
        elif any(b != "eps" for b, _ in mod.named_buffers()):
            return True  # PTQ observers observe every forward
    return bool(_batch_norm_stats(gm)) and gm.training and not bn_stats_frozen(gm)


def warn_if_unsynced(gm: nn.Module) -> None:
    """Called by convert: under torch.distributed, unsynced statistics give rank-dependent models."""
    if not is_distributed():
        return
    state = getattr(gm, _SYNC_ATTR, None)
    if state == "synced" or (state == "stale" and not _still_updating(gm)):
        return
    warnings.warn(
        "convert under torch.distributed with observer statistics that "
        f"{'were never reduced' if state is None else 'changed since the last sync'} across ranks: "
        "the qparams come from this rank's data alone and differ between ranks. Call "
        "pt2e_int8.sync_observers(model) on every rank before convert.",
        stacklevel=3,
    )


def wrap_ddp(prepared: GraphModule, **ddp_kwargs) -> DistributedDataParallel:
    """DistributedDataParallel for a QAT-prepared GraphModule, leaving observer buffers to `sync_observers`.

    DDP's default `broadcast_buffers=True` overwrites every rank's observer ranges and
    batch-norm statistics with rank 0's before each forward, so the model learns ranges
    from one shard. Here buffers stay per rank and are reduced where it matters (a
    `QATSchedule`'s freeze steps, `save_qat_checkpoint`, `sync_observers` before convert).
    Construction still broadcasts rank 0's weights and buffers once, so all ranks start equal.

    Args:
        prepared: the result of `prepare_qat` (on the device it trains on).
        **ddp_kwargs: passed to DistributedDataParallel (e.g. `device_ids=[local_rank]` on GPU).

    Example:
        pm = q.prepare_qat(model, example_inputs); ddp = q.wrap_ddp(pm)
        for xb, yb in shard: loss_fn(ddp(xb), yb).backward(); opt.step(); schedule.step()
    """
    if ddp_kwargs.get("broadcast_buffers", False):
        raise ConfigError(
            "wrap_ddp(broadcast_buffers=True) would copy rank 0's observer ranges over every rank each step, "
            "so the converted scales would come from rank 0's data alone. Leave broadcast_buffers unset: "
            "sync_observers reduces them over all ranks."
        )
    if not (dist.is_available() and dist.is_initialized()):
        raise DistributedError(
            "wrap_ddp needs an initialized process group: launch with `torchrun --nproc_per_node N` and call "
            "torch.distributed.init_process_group('gloo' on CPU, 'nccl' on GPUs) first."
        )
    ddp_kwargs["broadcast_buffers"] = False
    _hook_staleness(prepared)
    return DistributedDataParallel(prepared, **ddp_kwargs)
