"""QAT by knowledge distillation: train the fake-quantized model to reproduce its own float outputs.

A transformer's labels are rarely at hand where it is deployed, and the float model's outputs are
a better target than labels anyway: they are what int8 must preserve. `distill` fine-tunes a
`prepare_qat` GraphModule (the student) against the float model (the teacher) on unlabeled
inputs, with the usual QAT schedule (observers frozen after a number of steps, see `QATSchedule`);
`convert` then turns it into an int8 graph like any other.

    pm = q.prepare_qat(model, example, quantizer=q.Int8Quantizer().set_global(q.QuantConfig.qat(smooth=True)),
                       calibration=batches)
    q.calibrate(pm, batches)                      # fake-quant ranges start from the calibration data
    q.distill(pm, model, batches, epochs=2, freeze_observers_after=50)
    qm = q.convert(pm)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.fx import GraphModule
from torchao.quantization.pt2e import disable_fake_quant, disable_observer
from torchao.quantization.pt2e.learnable_fake_quantize import LearnableFakeQuantize

from pt2e_int8.capture import as_input_tuple
from pt2e_int8.errors import ConfigError
from pt2e_int8.qat import QATSchedule, move_to_eval, move_to_train

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cosine_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """1 - cosine over the last dim, averaged over rows, plus the MSE relative to the teacher's power
    (the cosine alone leaves the scale free, which a classifier head after it would notice)."""
    s, t = student.reshape(-1, student.shape[-1]), teacher.reshape(-1, teacher.shape[-1])
    return (1 - F.cosine_similarity(s, t, dim=-1)).mean() + mse_loss(student, teacher)


def mse_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error relative to the teacher's mean square (scale-free)."""
    return F.mse_loss(student, teacher) / teacher.pow(2).mean().clamp(min=1e-12)


LOSSES: dict[str, LossFn] = {"cosine": cosine_loss, "mse": mse_loss}


@dataclass
class DistillResult:
    """What `distill` did: the loss of every step (first and last to see it converged)."""

    losses: list[float] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return len(self.losses)

    def __str__(self) -> str:
        if not self.losses:
            return "no steps"
        head = sum(self.losses[:5]) / min(5, len(self.losses))
        tail = sum(self.losses[-5:]) / min(5, len(self.losses))
        return f"{self.steps} steps, loss {head:.3g} -> {tail:.3g}"


def _float_tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, Sequence) and not isinstance(out, str):
        return [t for o in out for t in _float_tensors(o)]
    return [t for o in vars(out).values() for t in _float_tensors(o)] if hasattr(out, "__dict__") else []


# `hidden=` shorthands: the ops whose outputs are matched layer by layer.
HIDDEN_OPS = {"layer_norm": (torch.ops.aten.layer_norm.default,)}


def hidden_nodes(gm: GraphModule, hidden: str | Sequence[str]) -> list[str]:
    """Names of the nodes whose outputs `distill(hidden=...)` matches: every output of an op family
    (`"layer_norm"`: a transformer's residual stream after each block) or the names given."""
    if isinstance(hidden, str) and hidden in HIDDEN_OPS:
        found = [n.name for n in gm.graph.nodes if n.op == "call_function" and n.target in HIDDEN_OPS[hidden]]
        if not found:
            raise ConfigError(f"distill(hidden={hidden!r}): the graph has no {hidden} op; pass node names instead.")
        return found
    names = [hidden] if isinstance(hidden, str) else list(hidden)
    have = {node.name for node in gm.graph.nodes}
    missing = [n for n in names if n not in have]
    if missing:
        raise ConfigError(f"distill(hidden=...) names nodes the graph does not have: {missing}; pass "
                          f"{sorted(HIDDEN_OPS)} or node names of the prepared graph.")
    return names


def with_outputs(gm: GraphModule, names: Sequence[str]) -> GraphModule:
    """A GraphModule sharing `gm`'s parameters and submodules that returns (its outputs, *nodes `names`),
    the extra outputs in graph order; inputs and outputs are flat (no pytree specs)."""
    graph = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    wanted = set(names)
    extra, result = [], None
    for node in gm.graph.nodes:
        if node.op == "output":
            result = torch.fx.node.map_arg(node.args[0], env.__getitem__)
            continue
        env[node] = graph.node_copy(node, env.__getitem__)
        if node.name in wanted:
            extra.append(env[node])
    graph.output((result, *extra))
    return GraphModule(gm, graph)


def float_reference(student: GraphModule) -> GraphModule:
    """A copy of the prepared `student` with fake-quantization off: the float model exactly as the
    student computes it. Its hidden states are the targets, not the teacher's: the outlier passes
    (SmoothQuant folds, output rescaling) scale intermediate channels, so a smoothed student's
    LayerNorm output is the teacher's divided by s, equal only at the model's output."""
    reference = copy.deepcopy(student)
    reference.apply(disable_fake_quant)
    reference.apply(disable_observer)
    return move_to_eval(reference)


def _at(keep: torch.Tensor | None, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The rows of `tensors` at the positions `keep` marks (all of them without a mask)."""
    if keep is None:
        return tensors
    if tuple(keep.shape) != tuple(tensors[0].shape[:keep.dim()]):
        raise ConfigError(f"distill(hidden_positions=...) gave a mask of shape {tuple(keep.shape)}; the hidden "
                          f"state has shape {tuple(tensors[0].shape)}: the mask must match its leading dims.")
    return tuple(t[keep.bool()] for t in tensors)


# Learning-rate factor at step `i` of `n` (0-based).
_LR_DECAYS: dict[str, Callable[[int, int], float]] = {
    "constant": lambda i, n: 1.0,
    "cosine": lambda i, n: 0.5 * (1.0 + math.cos(math.pi * i / n)),
}


def _check_learned_scales(learned: list, step: int) -> None:
    """A learned activation scale that an optimizer step took to 0 or below quantizes nothing: say so."""
    for module in learned:
        if not bool((module.scale > 0).all()):
            raise FloatingPointError(f"a learned activation scale became {module.scale.min().item():.3g} at step {step}: "
                                     "lower lr (learn_ranges moves scales by about lr per step).")


def distill(
    student: GraphModule,
    teacher: torch.nn.Module,
    batches: Sequence,
    *,
    epochs: int = 1,
    lr: float = 1e-5,
    lr_decay: str = "constant",
    loss: str | LossFn = "cosine",
    hidden: str | Sequence[str] | None = None,
    hidden_weight: float = 1.0,
    hidden_positions: Callable[..., torch.Tensor] | None = None,
    freeze_observers_after: int | None = None,
    freeze_bn_after: int | None = None,
    train_mode: bool = False,
    on_step: Callable[[int, float], None] | None = None,
) -> DistillResult:
    """Fine-tune a QAT-prepared `student` so its outputs match the float `teacher`'s on `batches`.

    Args:
        student: from `prepare_qat` (fake-quantized); trained in place.
        teacher: the float model the student was prepared from (any module with the same inputs).
        batches: unlabeled inputs, each a tensor or a tuple of positional tensors. The teacher's
            outputs are computed once and reused across epochs.
        epochs: passes over `batches`.
        lr: AdamW learning rate; fine-tuning a pretrained transformer wants 1e-5 .. 5e-5.
        lr_decay: "constant" (default) or "cosine": from `lr` down to 0 over all the steps, so the
            last steps settle the weights instead of moving them at full step size.
        loss: "cosine" (1 - cosine + relative MSE, for embeddings), "mse" (relative MSE, for
            logits or hidden states), or `fn(student_out, teacher_out) -> scalar`; applied to
            every floating-point output and summed.
        hidden: also match intermediate tensors, layer by layer (relative MSE averaged over them,
            weighted by `hidden_weight`): "layer_norm" for every LayerNorm output (a transformer's
            residual stream), or node names of the prepared graph. Their targets come from the
            student's own graph with fake-quantization off (`float_reference`), computed once
            before training: the float model as the student computes it, smoothing included. A
            much denser signal than the final output alone.
        hidden_weight: weight of the hidden-state term against the output loss.
        hidden_positions: `fn(*inputs) -> bool tensor` of the leading dims of the hidden states
            (batch, sequence) that count, e.g. `lambda ids, mask: mask.bool()` for padded text:
            padding positions feed no output, and matching them wastes the steps on them.
            Default: every position.
        freeze_observers_after, freeze_bn_after: steps after which fake-quant ranges / batch-norm
            statistics stop moving (QATSchedule); freezing ranges for the last part of training
            lets the weights settle on a fixed grid.
        train_mode: False (default) runs the student with dropout off and batch-norm on running
            statistics, so it can match the deterministic teacher; True trains it as in `train()`.
        on_step: called with (step, loss) after every step (progress, logging, early stop by raising).

    Returns:
        DistillResult with the loss of every step.
    """
    loss_fn = LOSSES.get(loss) if isinstance(loss, str) else loss
    if loss_fn is None:
        raise ConfigError(f"distill(loss={loss!r}) is not one of {sorted(LOSSES)} or a callable (student, teacher).")
    if lr_decay not in _LR_DECAYS:
        raise ConfigError(f"distill(lr_decay={lr_decay!r}) is not one of {sorted(_LR_DECAYS)}.")
    if epochs < 1 or not batches:
        raise ConfigError("distill needs at least one batch and epochs >= 1.")
    inputs = [as_input_tuple(b) for b in batches]
    teacher.eval()
    # Before the hidden-state view is built: it copies the student's graph, dropout nodes included.
    (move_to_train if train_mode else move_to_eval)(student)
    n_hidden, forward, reference = 0, student, None
    if hidden is not None:
        names = hidden_nodes(student, hidden)
        n_hidden, forward, reference = len(names), with_outputs(student, names), with_outputs(
            float_reference(student), names)
    with torch.no_grad():
        targets = []
        for x in inputs:
            target = [t.detach() for t in _float_tensors(teacher(*x))]
            if reference is not None:
                target += [t.detach() for t in _float_tensors(reference(*x))[-n_hidden:]]
            targets.append(target)
    del reference
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    learned = [m for m in student.modules() if isinstance(m, LearnableFakeQuantize) and m.learning_enabled[0]]
    lr_at = _LR_DECAYS[lr_decay]
    total = epochs * len(inputs)
    schedule = QATSchedule(student, freeze_observers_after=freeze_observers_after, freeze_bn_after=freeze_bn_after)
    result = DistillResult()
    for _ in range(epochs):
        for x, target in zip(inputs, targets, strict=True):
            outs = _float_tensors(forward(*x))
            if len(outs) != len(target):
                raise ConfigError(f"student gives {len(outs)} float outputs, teacher {len(target)}: distill needs "
                                  "the model the student was prepared from.")
            k = len(outs) - n_hidden
            value = sum(loss_fn(o, t) for o, t in zip(outs[:k], target[:k], strict=True))
            if n_hidden:
                keep = None if hidden_positions is None else hidden_positions(*x)
                value = value + hidden_weight * sum(
                    mse_loss(*_at(keep, o, t)) for o, t in zip(outs[k:], target[k:], strict=True)) / n_hidden
            opt.zero_grad()
            value.backward()
            for group in opt.param_groups:
                group["lr"] = lr * lr_at(result.steps, total)
            opt.step()
            _check_learned_scales(learned, result.steps)
            schedule.step()
            result.losses.append(value.item())
            if not math.isfinite(result.losses[-1]):
                raise FloatingPointError(f"distillation loss became {result.losses[-1]} at step {result.steps}; "
                                         "lower lr.")
            if on_step is not None:
                on_step(result.steps, result.losses[-1])
    move_to_eval(student)
    return result
