"""Code each rank runs under torchrun (tests/distributed/_launch.py); results go to OUT/rank{r}.pt.

    python -m torch.distributed.run --standalone --nproc_per_node 2 -m tests.distributed._workers NAME OUT [ARGS]

Data: scikit-learn's digits (real), split across ranks. Small models, few steps.
"""

from __future__ import annotations

import os
import signal
import sys
import warnings
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

import pt2e_int8 as q
from pt2e_int8.app.digits import DigitsMLP, load_digits_split
from pt2e_int8.capture import export_model
from pt2e_int8.qdq import is_quantize


class SmallCNN(nn.Module):
    """conv-bn-relu + dropout + linear on 8x8 digits: batch-norm and dropout in one QAT graph."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x.reshape(-1, 1, 8, 8))))
        return self.head(self.drop(torch.flatten(x, 1)))


def act_qparams(gm) -> list[tuple[float, int]]:
    """(scale, zero point) of every activation quantize node of a converted graph, in graph order."""
    return [(float(n.args[1]), int(n.args[2])) for n in gm.graph.nodes
            if is_quantize(n) and isinstance(n.args[1], float)]


def converted_state(gm) -> dict[str, torch.Tensor]:
    """Everything numeric a converted graph holds: its tensors and its activation qparams."""
    state = {k: v.clone() for k, v in gm.state_dict().items()}
    state.update({name: getattr(gm, name).clone() for name in dict(gm.named_buffers()) if name not in state})
    state["act_qparams"] = torch.tensor(act_qparams(gm), dtype=torch.float64)
    return state


def observer_ranges(gm) -> dict[str, torch.Tensor]:
    """min/max of every per-tensor activation observer (inside fake-quants too)."""
    out = {}
    for name, mod in gm.named_modules():
        obs = getattr(mod, "activation_post_process", mod)
        if name.endswith("activation_post_process") or not hasattr(obs, "min_val") or obs.min_val.numel() != 1:
            continue
        out[name] = torch.stack([obs.min_val.detach().clone(), obs.max_val.detach().clone()])
    return out


def _shard(x, y, rank, world, step, per_rank):
    """Step `step`'s global batch is a fixed slice of the data; rank r takes its r-th part."""
    start = (step * world + rank) * per_rank
    return x[start:start + per_rank], y[start:start + per_rank]


def calibration(out: Path) -> None:
    """Each rank calibrates on its half; rank 0 also computes the single-process references."""
    rank, world = dist.get_rank(), dist.get_world_size()
    split = load_digits_split()
    torch.manual_seed(0)
    model = DigitsMLP().eval()
    x = split.x_train[:512]
    batches = [(b,) for b in x.split(32)]
    mine = batches[rank::world]
    result = {}
    for observer in ("minmax", "percentile", "moving_average", "histogram"):
        quantizer = q.Int8Quantizer().set_global(q.QuantConfig.static(observer=observer))

        def prepared(quantizer=quantizer):
            return prepare_pt2e(export_model(model, (x[:32],), "batch").module(), quantizer)

        dist_prepared = prepared()
        q.calibrate(dist_prepared, mine)  # synced over the ranks
        qm = q.quantize(model, (x[:32],), calibration=mine, quantizer=quantizer)
        result[observer] = {"qparams": act_qparams(qm), "ranges": observer_ranges(dist_prepared),
                            "converted": converted_state(qm)}
        if observer == "histogram":
            result[observer]["hist"] = {n: (m.min_val.item(), m.max_val.item(), m.histogram.clone())
                                        for n, m in dist_prepared.named_modules() if hasattr(m, "histogram")}
        if rank == 0:
            union = batches[0::2] + batches[1::2]  # rank 0's shard, then rank 1's
            ref = q.quantize(model, (x[:32],), calibration=union, quantizer=quantizer, sync=False)
            result[observer]["single_qparams"] = act_qparams(ref)
            per_shard = []
            for r in range(world):
                p = prepared()
                q.calibrate(p, batches[r::world], sync=False)
                per_shard.append(observer_ranges(p))
            result[observer]["per_shard_ranges"] = per_shard
            if observer == "histogram":  # one observer over all data at once: the exact histogram
                exact = prepared()
                q.calibrate(exact, [(x,)], sync=False)
                result[observer]["exact"] = {n: (m.calculate_qparams(), m.min_val.item(), m.max_val.item(),
                                                 m.histogram.sum().item())
                                             for n, m in exact.named_modules() if hasattr(m, "histogram")}
                result[observer]["merged"] = {n: m.calculate_qparams()
                                              for n, m in dist_prepared.named_modules() if hasattr(m, "histogram")}
    result["errors"] = _disagreements(x, rank)
    torch.save(result, out / f"rank{rank}.pt")


def _disagreements(x, rank: int) -> dict[str, str | None]:
    """Ranks with different weights, then with different graphs: a clear error on every rank, no hang."""
    errors = {}
    for case in ("weights", "graph"):
        torch.manual_seed(rank if case == "weights" else 0)
        model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
        if case == "graph" and rank == 1:
            model.append(nn.Linear(10, 10))
        try:
            q.quantize(model.eval(), (x[:32],), calibration=[(x[:32],)])
            errors[case] = None
        except q.DistributedError as e:
            errors[case] = str(e)
    return errors


def _qat_steps(pm, ddp, split, steps, schedule=None, per_rank=32):
    rank, world = dist.get_rank(), dist.get_world_size()
    opt = torch.optim.SGD(pm.parameters(), lr=0.05, momentum=0.9)
    for step in range(steps):
        xb, yb = _shard(split.x_train, split.y_train, rank, world, step, per_rank)
        loss = F.cross_entropy(ddp(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if schedule is not None:
            schedule.step()


def qat(out: Path) -> None:
    """A short QAT run three ways: ours (wrap_ddp + schedule + sync), and the two naive DDP wrappings."""
    rank = dist.get_rank()
    split = load_digits_split()
    result = {}
    for variant in ("ours", "naive_broadcast", "naive_no_broadcast"):
        torch.manual_seed(0)
        pm = q.prepare_qat(SmallCNN(), (split.x_train[:32],))
        if variant == "ours":
            ddp = q.wrap_ddp(pm)
            schedule = q.QATSchedule(pm, freeze_bn_after=6, freeze_observers_after=8)
            _qat_steps(pm, ddp, split, 10, schedule)
            q.sync_observers(pm)
        else:
            ddp = DistributedDataParallel(pm, broadcast_buffers=(variant == "naive_broadcast"))
            _qat_steps(pm, ddp, split, 10)
        ranges = observer_ranges(pm)
        prepared_state = {k: v.detach().clone() for k, v in pm.state_dict().items()}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            qm = q.convert(pm)
        warned = any("sync_observers" in str(w.message) for w in caught)
        result[variant] = {"ranges": ranges, "prepared": prepared_state, "converted": converted_state(qm),
                           "warned": warned}
    torch.save(result, out / f"rank{rank}.pt")


def train(out: Path, steps: str, every: str, crash_after: str = "0", resume: str = "0") -> None:
    """QAT with checkpoints every `every` steps; rank 1 SIGKILLs itself after step `crash_after`."""
    rank, world = dist.get_rank(), dist.get_world_size()
    steps, every, crash_after, resume = int(steps), int(every), int(crash_after), resume == "1"
    split = load_digits_split()
    torch.manual_seed(0)
    pm = q.prepare_qat(SmallCNN(), (split.x_train[:16],))
    ddp = q.wrap_ddp(pm)
    opt = torch.optim.Adam(pm.parameters(), lr=3e-3)
    schedule = q.QATSchedule(pm, freeze_bn_after=5, freeze_observers_after=9)
    torch.manual_seed(1000 + rank)  # each rank its own dropout stream
    ckpt = out / "checkpoint.pt"
    start = q.load_qat_checkpoint(ckpt, pm, opt, schedule)["step"] if resume else 0
    for step in range(start, steps):
        xb, yb = _shard(split.x_train, split.y_train, rank, world, step, 16)
        loss = F.cross_entropy(ddp(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        if (step + 1) % every == 0:
            q.save_qat_checkpoint(ckpt, pm, opt, schedule, extra={"step": step + 1})
        if step + 1 == crash_after and rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)  # a machine dies: no clean-up, no message
    q.sync_observers(pm)
    if rank == 0:
        torch.save({k: v.detach().clone() for k, v in pm.state_dict().items()}, out / "final.pt")


def fsdp(out: Path) -> None:
    """The same QAT run under wrap_ddp and under FSDP2 (root unit), converted on every rank."""
    from torch.distributed.fsdp import fully_shard

    rank = dist.get_rank()
    split = load_digits_split()
    result = {}
    for variant in ("ddp", "fsdp"):
        torch.manual_seed(0)
        pm = q.prepare_qat(SmallCNN(), (split.x_train[:32],))
        net = q.wrap_ddp(pm) if variant == "ddp" else fully_shard(pm)
        schedule = q.QATSchedule(pm, freeze_bn_after=6, freeze_observers_after=8)
        torch.manual_seed(100 + rank)
        _qat_steps(pm, net, split, 10, schedule)
        if variant == "fsdp":
            try:
                q.convert(pm)
            except q.ConfigError as e:
                result["convert_error"] = str(e)
            pm = q.unshard_for_convert(pm)
        else:
            q.sync_observers(pm)
        result[variant] = converted_state(q.convert(pm))
    torch.manual_seed(0)
    pm = q.prepare_qat(SmallCNN(), (split.x_train[:32],))
    fully_shard(pm.get_submodule("conv"))
    fully_shard(pm)
    try:
        pm(split.x_train[:8])
    except RuntimeError as e:
        result["per_layer_error"] = str(e).splitlines()[0]
    torch.save(result, out / f"rank{rank}.pt")


def training(out: Path) -> None:
    """One launch for the training tests (start-up is most of a launch's cost): the QAT
    variants, FSDP, and the uninterrupted checkpointed run, each into its own folder."""
    for name, fn, args in (("qat", qat, ()), ("fsdp", fsdp, ()), ("full", train, ("12", "4"))):
        (out / name).mkdir(exist_ok=True)
        fn(out / name, *args)


WORKERS = {"calibration": calibration, "training": training, "train": train}

if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    try:
        name, out, *args = sys.argv[1:]
        WORKERS[name](Path(out), *args)
    finally:
        dist.destroy_process_group()
