"""Train/eval switching and freezing for QAT-prepared GraphModules.

An exported graph does not change behaviour on `.train()` / `.eval()`: dropout and
batch-norm are baked in. These helpers rewrite them in place, and implement the usual
QAT schedule: after some steps freeze the observers (qparams stop moving) and the
batch-norm statistics (running stats are used, no longer updated).
"""

from __future__ import annotations

import contextlib
import types

import torch
from torch.distributed.fsdp import FSDPModule
from torch.fx import GraphModule
from torchao.quantization.pt2e import disable_observer, enable_observer
from torchao.quantization.pt2e.learnable_fake_quantize import LearnableFakeQuantize

from pt2e_int8.compat.torchao import replace_dropout
from pt2e_int8.errors import ConfigError

aten = torch.ops.aten

# batch-norm ops whose positional arg 5 is `training`.
BN_TRAINING_ARG = {aten.batch_norm.default: 5, aten._native_batch_norm_legit.default: 5}
_TRAINING_ATTR = "_pt2e_int8_training"
_BN_FROZEN_ATTR = "_pt2e_int8_bn_frozen"


@contextlib.contextmanager
def _own_graph_class(gm: GraphModule):
    """Recompile on the GraphModule's own class, also after FSDP2's `fully_shard`.

    fully_shard swaps the instance's class for `type("FSDP…", (FSDPModule, cls), …)`.
    GraphModule.recompile on that subclass installs a second call wrapper that calls the
    first, which finds the second again: "maximum recursion depth exceeded" on the next
    forward. Recompiling with the original class in place avoids it.
    """
    cls = type(gm)
    if not issubclass(cls, FSDPModule):
        yield
        return
    gm.__class__ = cls.__bases__[-1]
    try:
        yield
    finally:
        gm.__class__ = cls


def _set_batch_norm_training(gm: GraphModule, training: bool) -> int:
    changed = 0
    for node in gm.graph.nodes:
        idx = BN_TRAINING_ARG.get(node.target) if node.op == "call_function" else None
        if idx is not None and len(node.args) > idx and node.args[idx] != training:
            args = list(node.args)
            args[idx] = training
            node.args = tuple(args)
            changed += 1
    if changed:
        with _own_graph_class(gm):
            gm.recompile()
    return changed


def move_to_train(gm: GraphModule) -> GraphModule:
    """Dropout active; batch-norm uses batch statistics unless frozen."""
    if not getattr(gm, _TRAINING_ATTR, True):
        with _own_graph_class(gm):
            replace_dropout(gm, train_to_eval=False)
    setattr(gm, _TRAINING_ATTR, True)
    _set_batch_norm_training(gm, not getattr(gm, _BN_FROZEN_ATTR, False))
    torch.nn.Module.train(gm, True)
    return gm


def move_to_eval(gm: GraphModule) -> GraphModule:
    """Dropout off; batch-norm uses running statistics. Idempotent."""
    if getattr(gm, _TRAINING_ATTR, True):
        with _own_graph_class(gm):
            replace_dropout(gm, train_to_eval=True)
    setattr(gm, _TRAINING_ATTR, False)
    _set_batch_norm_training(gm, False)
    torch.nn.Module.train(gm, False)
    return gm


def is_training(gm: GraphModule) -> bool:
    """Whether a prepared graph runs dropout and batch statistics now (only QAT graphs can)."""
    return bool(getattr(gm, _TRAINING_ATTR, False))


@contextlib.contextmanager
def evaluating(gm: GraphModule):
    """Run `gm` in eval mode inside the block and give it back in the mode it had."""
    training = is_training(gm)
    if training:
        move_to_eval(gm)
    try:
        yield gm
    finally:
        if training:
            move_to_train(gm)


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


def learn_ranges(gm: GraphModule) -> int:
    """Start training the activation ranges of a `QuantConfig.qat(learn_ranges=True)` model: their
    observers stop and each scale and zero point becomes a trainable parameter, from the value
    calibration gave it. Call after `calibrate` and before the optimizer is built (`distill`
    builds its own). Returns how many ranges train; 0 when the config did not ask for them."""
    learnable = [m for m in gm.modules() if isinstance(m, LearnableFakeQuantize)]
    for module in learnable:
        if module.scale is None:
            raise ConfigError("learn_ranges: an activation range has never been observed; run calibrate(pm, "
                              "batches) first, so the ranges start where PTQ puts them.")
        module.enable_range_learning()
    return len(learnable)


def bn_stats_frozen(gm: GraphModule) -> bool:
    """Whether `freeze_bn_stats` is in effect (batch-norm uses and keeps its running statistics)."""
    return bool(getattr(gm, _BN_FROZEN_ATTR, False))


def freeze_bn_stats(gm: GraphModule, frozen: bool = True) -> GraphModule:
    """Use (and stop updating) batch-norm running statistics, also across later `.train()` calls."""
    setattr(gm, _BN_FROZEN_ATTR, frozen)
    if getattr(gm, _TRAINING_ATTR, True):
        _set_batch_norm_training(gm, not frozen)
    return gm


class QATSchedule:
    """Call `.step()` once per training step; freezes observers / BN stats at the given steps.

    Under torch.distributed (every rank steps its own schedule), each freeze first reduces
    observer and batch-norm statistics over the ranks (`sync_observers`), so all ranks
    freeze one identical state and train on with the same fake-quant grid. `sync=False`
    turns that off (a model trained by one rank alone inside a distributed job).

    Example:
        sched = QATSchedule(pm, freeze_bn_after=200, freeze_observers_after=300)
        for xb, yb in loader: ...; opt.step(); sched.step()
    """

    def __init__(self, gm: GraphModule, *, freeze_observers_after: int | None = None,
                 freeze_bn_after: int | None = None, sync: bool = True) -> None:
        self.gm, self.steps, self.sync = gm, 0, sync
        self.freeze_observers_after, self.freeze_bn_after = freeze_observers_after, freeze_bn_after

    def step(self) -> None:
        self.steps += 1
        freeze_bn = self.freeze_bn_after is not None and self.steps == self.freeze_bn_after
        freeze_obs = self.freeze_observers_after is not None and self.steps == self.freeze_observers_after
        if (freeze_bn or freeze_obs) and self.sync:
            from pt2e_int8.distributed import sync_observers  # distributed imports this module

            sync_observers(self.gm)
        if freeze_bn:
            freeze_bn_stats(self.gm)
        if freeze_obs:
            freeze_observers(self.gm)

    def state_dict(self) -> dict:
        """What a checkpoint needs to resume the schedule (the freezes it has applied follow from it)."""
        return {"steps": self.steps, "freeze_observers_after": self.freeze_observers_after,
                "freeze_bn_after": self.freeze_bn_after}

    def load_state_dict(self, state: dict) -> None:
        """Resume at `state["steps"]`, re-applying the batch-norm freeze (a Python flag, not a buffer)."""
        self.steps = int(state["steps"])
        self.freeze_observers_after = state.get("freeze_observers_after", self.freeze_observers_after)
        self.freeze_bn_after = state.get("freeze_bn_after", self.freeze_bn_after)
        if self.freeze_bn_after is not None and self.steps >= self.freeze_bn_after:
            freeze_bn_stats(self.gm)
        if self.freeze_observers_after is not None and self.steps >= self.freeze_observers_after:
            freeze_observers(self.gm)
