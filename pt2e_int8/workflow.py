"""PTQ and QAT workflows, each a straight list of steps (like torchao's prepare_pt2e).

    quantize:    check inputs → export (dynamic batch) → [smooth: activation statistics →
                 calibrated transforms] → prepare_pt2e → calibrate → convert
    prepare_qat: check inputs → export (train mode) → [smooth: statistics in eval mode →
                 calibrated transforms] → prepare_qat_pt2e → trainable GraphModule
    convert:     eval mode → convert_pt2e (QDQ folded: int8 weight constants) → biases on their int32 grid
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule
from torch.fx import GraphModule
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e, prepare_qat_pt2e

from pt2e_int8.bias_grid import snap_bias_to_int32_grid
from pt2e_int8.calibration_check import check_observed_ranges
from pt2e_int8.calibration_stats import collect_activation_stats
from pt2e_int8.capture import as_input_tuple, describe_inputs, export_model
from pt2e_int8.compat.torchao import convert_with_trained_qparams, fold_only_present_conv_kinds
from pt2e_int8.config import QuantConfig
from pt2e_int8.decision import amend, decision_of
from pt2e_int8.distributed import is_distributed, sync_observers, warn_if_unsynced
from pt2e_int8.errors import CalibrationError, ConfigError
from pt2e_int8.model_state import require_float, require_prepared
from pt2e_int8.qat import enable_train_eval, evaluating, move_to_eval, move_to_train
from pt2e_int8.quantizer import Int8Quantizer
from pt2e_int8.transforms import apply_calibrated_transforms

# Progress is printed only for runs that take longer than this.
_PROGRESS_AFTER_S = 2.0


def _default_quantizer(cfg: QuantConfig) -> Int8Quantizer:
    return Int8Quantizer().set_global(cfg)


def _check_quantizer(quantizer, fn: str) -> None:
    if quantizer is not None and not isinstance(quantizer, Int8Quantizer):
        raise ConfigError(f"{fn}(quantizer=...) takes an Int8Quantizer, got {type(quantizer).__name__}: e.g. "
                          "Int8Quantizer().set_global(QuantConfig.static()).")


def _check_qat_flags(quantizer: Int8Quantizer, qat: bool) -> None:
    wrong = [c.scheme for c in quantizer.configs if c.is_qat != qat]
    if wrong:
        if qat:
            raise ConfigError(
                f"prepare_qat needs QuantConfig.qat() in every scope; got {', '.join(wrong)}. "
                "For post-training quantization use quantize(...)."
            )
        raise ConfigError(
            f"quantize needs a PTQ config (static/dynamic/weight_only) in every scope; got "
            f"{', '.join(wrong)}. For QAT use prepare_qat(...), train, then convert(...)."
        )


class _Progress:
    """'calibrating 12/50' on stderr, only once a run has taken a couple of seconds."""

    def __init__(self, label: str, total: int | None, enabled: bool | None) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.start = time.monotonic()
        self.shown = False

    def update(self, done: int) -> None:
        if self.enabled is False:
            return
        elapsed = time.monotonic() - self.start
        if self.enabled is None and elapsed < _PROGRESS_AFTER_S:
            return
        of = f"/{self.total}" if self.total else ""
        end = "\r" if sys.stderr.isatty() else "\n"
        if sys.stderr.isatty() or done == self.total or not self.shown or done % 10 == 0:
            print(f"{self.label} {done}{of} batches ({elapsed:.1f}s)", end=end, file=sys.stderr, flush=True)
            self.shown = True

    def close(self) -> None:
        if self.shown and sys.stderr.isatty():
            print(file=sys.stderr)


def _check_samples(batch: tuple, index: int) -> None:
    empty = [i for i, t in enumerate(batch) if isinstance(t, torch.Tensor) and t.dim() > 0 and t.shape[0] == 0]
    if empty:
        raise CalibrationError(
            f"Calibration batch {index} has no samples: input(s) {empty} have batch size 0. Observers that see "
            "nothing give placeholder scales; drop empty batches."
        )


def _check_finite(batch: tuple, index: int) -> None:
    bad = [i for i, t in enumerate(batch)
           if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CalibrationError(
            f"Calibration batch {index} has NaN or Inf values in input(s) {bad}. "
            "Clean or drop that batch: observers would turn it into infinite scales."
        )


def calibrate(prepared: GraphModule, batches: Iterable, *, progress: bool | None = None,
              sync: bool | None = None) -> int:
    """Run calibration batches through a prepared model. Returns how many ran (on all ranks).

    A QAT model calibrates in eval mode (dropout off, batch-norm on running statistics: the
    ranges inference will see; with dropout on they came out random and too wide) and is given
    back in the mode it had.

    Each batch is a tensor or a tuple of tensors (positional inputs). Raises
    CalibrationError naming the batch that has NaN/Inf or does not fit the model.

    Under torch.distributed (`sync=None`: when a process group of more than one rank is
    initialized) every rank calibrates on its own shard, then the observers are reduced
    so that every rank holds the qparams of one process that saw all shards
    (`sync_observers`). Every rank must call it; `sync=False` keeps ranks separate.
    """
    require_prepared(prepared, "calibrate")
    if not hasattr(batches, "__iter__") or isinstance(batches, torch.Tensor | str | bytes):
        raise CalibrationError(
            f"calibration must be an iterable of batches (a list of tensors or of tuples of tensors), got "
            f"{type(batches).__name__}. Wrap a single batch in a list: calibration=[batch]."
        )
    total = len(batches) if hasattr(batches, "__len__") else None
    bar = _Progress("calibrating", total, progress)
    count = 0
    with torch.no_grad(), evaluating(prepared):
        for index, batch in enumerate(batches):
            args = as_input_tuple(batch)
            _check_samples(args, index)
            _check_finite(args, index)
            try:
                prepared(*args)
            except Exception as e:
                raise CalibrationError(
                    f"Calibration batch {index} {describe_inputs(args)} does not run through the model: "
                    f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. "
                    "Batches must have the example inputs' structure (only the batch size may differ)."
                ) from e
            count += 1
            bar.update(count)
    bar.close()
    if is_distributed() and sync is not False:
        count = _count_on_all_ranks(count, prepared)
        sync_observers(prepared)
    return count


def _count_on_all_ranks(count: int, prepared: GraphModule) -> int:
    device = next((b.device for b in prepared.buffers()), torch.device("cpu"))
    total = torch.tensor([count], dtype=torch.int64, device=device)
    dist.all_reduce(total)
    return int(total.item())


def _mark_unobserved(prepared: GraphModule) -> None:
    """Record layers whose observers saw no data: torchao would quantize them with a bogus scale."""
    for node in prepared.graph.nodes:
        if node.op != "call_module":
            continue
        mod = prepared.get_submodule(node.target)
        observer = getattr(mod, "activation_post_process", mod)  # fake-quant wraps its observer
        min_val = getattr(observer, "min_val", None)
        if isinstance(min_val, torch.Tensor) and min_val.numel() and torch.isinf(min_val).all():
            for user in node.users:
                decision = decision_of(user)
                if decision is not None and decision.scheme is not None:
                    amend(user, unobserved=True)


def _wants_statistics(quantizer: Int8Quantizer) -> bool:
    return any(c.smooth for c in quantizer.configs)


def smooth_graph(gm: GraphModule, quantizer: Int8Quantizer, batches: list) -> list[str]:
    """The statistics pass and the calibrated transforms (outlier handling) on the float graph.

    Runs `batches` through `gm` once to record activation statistics, then rewrites the scopes
    whose config has `smooth=True`. Returns the names of the transforms that changed the graph.
    """
    for index, batch in enumerate(batches):
        _check_finite(as_input_tuple(batch), index)
    try:
        stats = collect_activation_stats(gm, [as_input_tuple(b) for b in batches])
    except Exception as e:
        raise CalibrationError(
            f"Calibration batches do not run through the model for the smoothing statistics: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. Batches must have the example "
            "inputs' structure (only the batch size may differ)."
        ) from e
    _, fired = apply_calibrated_transforms(gm, stats, lambda node: quantizer.resolve(node).config)
    return fired


def quantize(
    model: torch.nn.Module,
    example_inputs,
    calibration: Iterable | None = None,
    quantizer: Int8Quantizer | None = None,
    *,
    dynamic_shapes="batch",
    progress: bool | None = None,
    sync: bool | None = None,
) -> GraphModule:
    """Post-training quantization: export, annotate, calibrate, convert.

    Args:
        model: the trained float module (put in eval mode here).
        example_inputs: tensor or tuple of tensors, batch first.
        calibration: iterable of batches (tensor or tuple); required for static configs.
        quantizer: an Int8Quantizer; default `Int8Quantizer().set_global(QuantConfig.static())`.
        dynamic_shapes: "batch" (default), None (static), or a torch.export spec.
        progress: show calibration progress (default: only on runs over 2 s).
        sync: under torch.distributed, merge the ranks' observer statistics (default: yes;
            every rank calls quantize with its own calibration shard). See `calibrate`.

    Returns:
        The converted GraphModule: QDQ nodes folded, int8 weight constants.

    Example:
        qm = quantize(model, (x[:32],), calibration=[(b,) for b in x.split(32)])
    """
    require_float(model, "quantize")
    _check_quantizer(quantizer, "quantize")
    quantizer = quantizer or _default_quantizer(QuantConfig.static())
    _check_qat_flags(quantizer, qat=False)
    needs_data = any(c.needs_calibration for c in quantizer.configs)
    if needs_data and calibration is None:
        raise CalibrationError(
            "A static config needs calibration data: pass calibration=[batch, ...] with a few "
            "hundred representative samples, or use QuantConfig.dynamic() / weight_only()."
        )
    model.eval()
    exported = export_model(model, example_inputs, dynamic_shapes).module()
    if _wants_statistics(quantizer):
        calibration = list(calibration)  # read twice: statistics, then the observers
        smooth_graph(exported, quantizer, calibration)
    prepared = prepare_pt2e(exported, quantizer)
    if calibration is not None:
        ran = calibrate(prepared, calibration, progress=progress, sync=sync)
        if needs_data and ran == 0:
            raise CalibrationError("The calibration iterable was empty: pass at least one batch.")
        if needs_data:
            check_observed_ranges(prepared)
    else:
        # torchao observes weights during forward: dynamic and weight-only configs still
        # need one pass, or every weight gets placeholder qparams.
        calibrate(prepared, [as_input_tuple(example_inputs)], progress=False, sync=sync)
    _mark_unobserved(prepared)
    converted = convert_pt2e(prepared)
    snap_bias_to_int32_grid(converted)
    return converted


def prepare_qat(
    model: torch.nn.Module,
    example_inputs,
    quantizer: Int8Quantizer | None = None,
    *,
    calibration: Iterable | None = None,
    dynamic_shapes="batch",
) -> GraphModule:
    """Export in train mode and insert fake-quantization; train the result like a module.

    The returned GraphModule supports `.train()` / `.eval()` (batch-norm and dropout
    switch correctly); see `pt2e_int8.qat` to freeze observers and batch-norm statistics.
    A config with `smooth=True` needs `calibration` batches: their statistics (taken in eval
    mode) choose the outlier rewrites before fake-quantization is inserted. To start the
    fake-quantizers from calibrated ranges as well, run `calibrate(pm, batches)` on the result.

    Example:
        pm = prepare_qat(model, (x[:32],))
        for xb, yb in loader: loss = F.cross_entropy(pm(xb), yb); loss.backward(); opt.step()
        qm = convert(pm)
    """
    require_float(model, "prepare_qat")
    _check_quantizer(quantizer, "prepare_qat")
    quantizer = quantizer or _default_quantizer(QuantConfig.qat())
    _check_qat_flags(quantizer, qat=True)
    if _wants_statistics(quantizer) and calibration is None:
        raise CalibrationError(
            "A QuantConfig with smooth=True chooses its rewrites from activation statistics: pass "
            "prepare_qat(..., calibration=[batch, ...]) with a few representative batches."
        )
    model.train()
    exported = export_model(model, example_inputs, dynamic_shapes).module()
    if _wants_statistics(quantizer):
        move_to_eval(exported)  # statistics without dropout, batch-norm on running stats
        smooth_graph(exported, quantizer, list(calibration))
        move_to_train(exported)
    prepared = prepare_qat_pt2e(exported, quantizer)
    enable_train_eval(prepared)
    return prepared


def convert(prepared: GraphModule) -> GraphModule:
    """Turn a QAT-prepared (or calibrated) model into the converted int8 GraphModule, in eval mode.

    Under torch.distributed, call `sync_observers(prepared)` on every rank first (a
    `QATSchedule` that froze observers and batch-norm has done so); convert warns otherwise.
    """
    if isinstance(prepared, FSDPModule):
        raise ConfigError(
            "convert got an FSDP-sharded model: its weights are DTensor shards that the int8 weights "
            "cannot be folded from. Call pt2e_int8.unshard_for_convert(model) on every rank and convert "
            "its result."
        )
    require_prepared(prepared, "convert")
    warn_if_unsynced(prepared)
    move_to_eval(prepared)
    _mark_unobserved(prepared)
    with fold_only_present_conv_kinds(), convert_with_trained_qparams(prepared):
        converted = convert_pt2e(prepared)
    snap_bias_to_int32_grid(converted)
    return converted

