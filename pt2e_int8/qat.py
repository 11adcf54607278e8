"""Train/eval switching and freezing for QAT-prepared GraphModules.

An exported graph does not change behaviour on `.train()` / `.eval()`: dropout and
batch-norm are baked in. These helpers rewrite them in place, and implement the usual
QAT schedule: after some steps freeze the observers (qparams stop moving) and the
batch-norm statistics (running stats are used, no longer updated).
"""

from __future__ import annotations

import types

import torch
from torch.fx import GraphModule
from torchao.quantization.pt2e import disable_observer, enable_observer

from pt2e_int8.compat.torchao import replace_dropout

aten = torch.ops.aten

# batch-norm ops whose positional arg 5 is `training`.
_BN_TRAINING_ARG = {aten.batch_norm.default: 5, aten._native_batch_norm_legit.default: 5}
_TRAINING_ATTR = "_pt2e_int8_training"
_BN_FROZEN_ATTR = "_pt2e_int8_bn_frozen"


def _set_batch_norm_training(gm: GraphModule, training: bool) -> int:
    changed = 0
    for node in gm.graph.nodes:
        idx = _BN_TRAINING_ARG.get(node.target) if node.op == "call_function" else None
        if idx is not None and len(node.args) > idx and node.args[idx] != training:
            args = list(node.args)
            args[idx] = training
            node.args = tuple(args)
            changed += 1
    if changed:
        gm.recompile()
    return changed


def move_to_train(gm: GraphModule) -> GraphModule:
    """Dropout active; batch-norm uses batch statistics unless frozen."""
    if not getattr(gm, _TRAINING_ATTR, True):
        replace_dropout(gm, train_to_eval=False)
    setattr(gm, _TRAINING_ATTR, True)
    _set_batch_norm_training(gm, not getattr(gm, _BN_FROZEN_ATTR, False))
    torch.nn.Module.train(gm, True)
    return gm


def move_to_eval(gm: GraphModule) -> GraphModule:
    """Dropout off; batch-norm uses running statistics. Idempotent."""
    if getattr(gm, _TRAINING_ATTR, True):
        replace_dropout(gm, train_to_eval=True)
    setattr(gm, _TRAINING_ATTR, False)
    _set_batch_norm_training(gm, False)
    torch.nn.Module.train(gm, False)
    return gm


def enable_train_eval(gm: GraphModule) -> GraphModule:
    """Make `gm.train()` / `gm.eval()` switch dropout and batch-norm like an eager module."""

    def _train(self, mode: bool = True):
        return move_to_train(self) if mode else move_to_eval(self)

    gm.train = types.MethodType(_train, gm)
    gm.eval = types.MethodType(lambda self: move_to_eval(self), gm)
    setattr(gm, _TRAINING_ATTR, True)
    return gm


def freeze_observers(gm: GraphModule, frozen: bool = True) -> GraphModule:
    """Stop (or restart) updating fake-quant ranges; fake-quantization itself continues."""
    gm.apply(disable_observer if frozen else enable_observer)
    return gm


def freeze_bn_stats(gm: GraphModule, frozen: bool = True) -> GraphModule:
    """Use (and stop updating) batch-norm running statistics, also across later `.train()` calls."""
    setattr(gm, _BN_FROZEN_ATTR, frozen)
    if getattr(gm, _TRAINING_ATTR, True):
        _set_batch_norm_training(gm, not frozen)
    return gm


class QATSchedule:
    """Call `.step()` once per training step; freezes observers / BN stats at the given steps.

    Example:
        sched = QATSchedule(pm, freeze_bn_after=200, freeze_observers_after=300)
        for xb, yb in loader: ...; opt.step(); sched.step()
    """

    def __init__(self, gm: GraphModule, *, freeze_observers_after: int | None = None,
                 freeze_bn_after: int | None = None) -> None:
        self.gm, self.steps = gm, 0
        self.freeze_observers_after, self.freeze_bn_after = freeze_observers_after, freeze_bn_after

    def step(self) -> None:
        self.steps += 1
        if self.freeze_bn_after is not None and self.steps == self.freeze_bn_after:
            freeze_bn_stats(self.gm)
        if self.freeze_observers_after is not None and self.steps == self.freeze_observers_after:
            freeze_observers(self.gm)
