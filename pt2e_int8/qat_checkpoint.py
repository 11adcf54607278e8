"""Checkpoint and resume a QAT run, on one process or many.

A QAT run's state is more than its weights: observer ranges and fake-quant scales, which
observers are frozen, batch-norm running statistics and whether they are frozen, the
optimizer, the schedule's step, and every rank's random state (dropout). Resuming from a
checkpoint ends where the uninterrupted run ends (tests/distributed/test_checkpoint.py).

Under torch.distributed every rank calls `save_qat_checkpoint` (a collective): observers
are reduced first (`sync_observers`), so the file holds the one set of qparams all ranks
agree on and can be converted in a single process; rank 0 writes it atomically (a run
killed while saving keeps its previous checkpoint). Every rank loads the same file (a
shared filesystem on several machines).

The file is plain tensors and containers, loaded with `weights_only=True`: it never runs code.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch.fx import GraphModule
from torch.nn.parallel import DistributedDataParallel

from pt2e_int8.atomic import atomic_path
from pt2e_int8.distributed import is_distributed, mark_synced, sync_observers
from pt2e_int8.errors import ConfigError, InputFileError
from pt2e_int8.qat import QATSchedule, bn_stats_frozen, freeze_bn_stats, move_to_eval, move_to_train

FORMAT = "pt2e-int8 qat checkpoint"
VERSION = 1


def _unwrap(model) -> GraphModule:
    from torch.distributed.fsdp import FSDPModule

    if isinstance(model, FSDPModule):
        raise ConfigError(
            "QAT checkpoints hold full (replicated) tensors; an FSDP-sharded model holds DTensor shards. "
            "Checkpoint it with torch.distributed.checkpoint (dcp.save / dcp.load), or train with wrap_ddp."
        )
    return model.module if isinstance(model, DistributedDataParallel) else model


def _rank_and_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)


def save_qat_checkpoint(path: str | os.PathLike, prepared, optimizer: torch.optim.Optimizer | None = None,
                        schedule: QATSchedule | None = None, *, extra: dict | None = None) -> Path:
    """Save everything a QAT run needs to resume. Every rank calls it; rank 0 writes.

    Args:
        path: the checkpoint file (replaced atomically).
        prepared: the `prepare_qat` GraphModule, or its `wrap_ddp` wrapper.
        optimizer, schedule: saved when given.
        extra: your own plain data (epoch, step, data order seed): tensors, numbers, strings,
            lists and dicts only.

    Returns:
        The path.
    """
    gm = _unwrap(prepared)
    _check_plain(extra or {}, "extra")
    sync_observers(gm)
    rank, world = _rank_and_world()
    rng = {"cpu": torch.get_rng_state(),
           "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None}
    rngs = [rng]
    if world > 1:
        rngs = [None] * world
        dist.all_gather_object(rngs, rng)
    if rank == 0:
        state = {
            "format": FORMAT, "version": VERSION, "world_size": world,
            "model": gm.state_dict(),
            "training": gm.training, "bn_frozen": bn_stats_frozen(gm),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "schedule": schedule.state_dict() if schedule is not None else None,
            "rng": rngs, "extra": extra or {},
        }
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    if world > 1:
        dist.barrier()  # no rank runs ahead of a checkpoint that is not on disk yet
    return Path(path)


def load_qat_checkpoint(path: str | os.PathLike, prepared, optimizer: torch.optim.Optimizer | None = None,
                        schedule: QATSchedule | None = None) -> dict:
    """Restore a QAT run saved by `save_qat_checkpoint` into a freshly prepared model; returns `extra`.

    Call it on every rank, after `prepare_qat` (same model, quantizer and example inputs)
    and after creating the optimizer and schedule, before training resumes. Each rank
    gets back its own random state when the world size is unchanged.

    Raises:
        InputFileError: the file is missing, damaged, not a QAT checkpoint, or does not
            match the prepared model.
    """
    gm = _unwrap(prepared)
    state = _read(Path(path))
    result = gm.load_state_dict(state["model"], strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise InputFileError(
            f"{path} does not match this prepared model (missing {result.missing_keys[:5]}, unexpected "
            f"{result.unexpected_keys[:5]}). Prepare the same model with the same quantizer before loading."
        )
    (move_to_train if state["training"] else move_to_eval)(gm)
    freeze_bn_stats(gm, bool(state["bn_frozen"]))
    if optimizer is not None and state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    if schedule is not None and state["schedule"] is not None:
        schedule.load_state_dict(state["schedule"])
    rank, world = _rank_and_world()
    if world != state["world_size"]:
        warnings.warn(f"{path} was written by {state['world_size']} processes and this run has {world}: "
                      "random streams (dropout) restart, so the run will not repeat the original exactly.",
                      stacklevel=2)
    else:
        rng = state["rng"][rank]
        torch.set_rng_state(rng["cpu"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    if world > 1:
        mark_synced(gm)  # every rank loaded the same (synced) statistics
    return state["extra"]


_PLAIN = (str, int, float, bool, type(None), torch.Tensor)


def _check_plain(value, where: str) -> None:
    """`extra` must load with weights_only=True: plain containers of tensors, numbers and strings."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN):
        raise ConfigError(
            f"save_qat_checkpoint: {where} is a {type(value).__name__}; the checkpoint loads without running "
            "code (weights_only), so extra may hold only tensors, numbers, strings, lists and dicts."
        )


def _read(path: Path) -> dict:
    if not path.is_file():
        raise InputFileError(f"No QAT checkpoint at {path}: check the path, or start the run without resuming.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputFileError(
            f"{path} is not a readable QAT checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
            "It may be truncated or not a checkpoint: resume from an earlier one or start over."
        ) from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputFileError(f"{path} is not a pt2e-int8 QAT checkpoint (written by save_qat_checkpoint).")
    if state.get("version") != VERSION:
        raise InputFileError(f"{path} is a version {state.get('version')} checkpoint; this pt2e-int8 reads "
                             f"version {VERSION}.")
    return state
