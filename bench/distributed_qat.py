"""Distributed QAT, measured: which qparams each rank would convert, and what keeping them in sync costs.

    .venv/bin/python -m torch.distributed.run --standalone --nproc_per_node 2 bench/distributed_qat.py

2 CPU processes (gloo). Models: the digits MLP (dropout) and a digits conv-bn CNN, each
QAT-fine-tuned from one float model (trained identically on every rank). Shards: `iid`
(each global batch of 64 split in halves) and `by-label` (rank 0 trains on digits 0-4,
rank 1 on 5-9, as data sharded by source often is; each global batch still holds both).
Strategies, each a fresh QAT run, interleaved `--repeats` times in one launch:

  naive-broadcast     DistributedDataParallel(pm): rank 0's buffers overwrite the others' before each forward
  naive-no-broadcast  DistributedDataParallel(pm, broadcast_buffers=False), nothing synced
  ours                wrap_ddp + QATSchedule (syncs at its freezes) + sync_observers before convert
  ours-every-step     ours plus sync_observers after every optimizer step
  one-process         rank 0 alone on the same global batches (the reference)

Reported per strategy: held-out accuracy of the model each rank converts, the spread of
activation scales between the ranks, the largest activation-scale difference from
ours-every-step, and ms per training step (median over repeats, ratio to naive-broadcast).
Writes bench/distributed_qat.json and bench/distributed_qat.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

import pt2e_int8 as q  # noqa: E402
from pt2e_int8.app.device import describe_device, summary_line  # noqa: E402
from pt2e_int8.app.digits import SEED, DigitsCNN, DigitsMLP, load_digits_split, train  # noqa: E402
from pt2e_int8.atomic import write_text_atomic  # noqa: E402
from pt2e_int8.qdq import is_quantize  # noqa: E402

STRATEGIES = ("naive-broadcast", "naive-no-broadcast", "ours", "ours-every-step")
PER_RANK = 32


MODELS = {"digits-mlp": (DigitsMLP, 30, 3), "digits-cnn": (DigitsCNN, 10, 2)}  # class, float epochs, QAT epochs


def shard_plan(split, shards: str, epochs: int, world: int) -> list[list[torch.Tensor]]:
    """For each step, the index tensor of each rank's part of the global batch."""
    steps = []
    if shards == "iid":
        per_epoch = len(split.x_train) // (PER_RANK * world)
        for e in range(epochs):
            order = torch.randperm(len(split.x_train), generator=torch.Generator().manual_seed(SEED + e))
            for i in range(per_epoch):
                g = order[i * PER_RANK * world:(i + 1) * PER_RANK * world]
                steps.append([g[r * PER_RANK:(r + 1) * PER_RANK] for r in range(world)])
        return steps
    groups = [torch.nonzero(split.y_train % world == r if world > 2 else (split.y_train >= 5) == bool(r)).flatten()
              for r in range(world)]
    per_epoch = min(len(g) for g in groups) // PER_RANK
    for e in range(epochs):
        orders = [g[torch.randperm(len(g), generator=torch.Generator().manual_seed(SEED + e))] for g in groups]
        steps += [[o[i * PER_RANK:(i + 1) * PER_RANK] for o in orders] for i in range(per_epoch)]
    return steps


def run_qat(float_model, split, plan, strategy: str, qat_epochs: int, has_bn: bool, rank: int, world: int):
    """One QAT run; returns (converted model, ms per step). Collective unless strategy is one-process."""
    torch.manual_seed(SEED + 1 + rank)
    pm = q.prepare_qat(copy.deepcopy(float_model), (split.x_train[:PER_RANK],))
    steps_per_epoch = len(plan) // qat_epochs
    schedule = q.QATSchedule(
        pm, freeze_observers_after=len(plan) - steps_per_epoch // 2,
        freeze_bn_after=(qat_epochs - 1) * steps_per_epoch if has_bn else None, sync=strategy.startswith("ours"))
    if strategy == "one-process":
        net = pm
    elif strategy.startswith("ours"):
        net = q.wrap_ddp(pm)
    else:
        net = DistributedDataParallel(pm, broadcast_buffers=strategy == "naive-broadcast")
    opt = torch.optim.Adam(pm.parameters(), lr=1e-4)
    net.train()
    start = time.perf_counter()
    for parts in plan:
        idx = torch.cat(parts) if strategy == "one-process" else parts[rank]
        loss = F.cross_entropy(net(split.x_train[idx]), split.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        if strategy == "ours-every-step":
            q.sync_observers(pm)
    ms = (time.perf_counter() - start) * 1000 / len(plan)
    if strategy.startswith("ours"):
        q.sync_observers(pm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return q.convert(pm), ms


def act_scales(gm) -> torch.Tensor:
    """Per-tensor activation scales (python floats in the graph; per-channel weight scales are tensors)."""
    return torch.tensor([float(n.args[1]) for n in gm.graph.nodes
                         if is_quantize(n) and isinstance(n.args[1], float)], dtype=torch.float64)


def accuracy(gm, split) -> float:
    with torch.no_grad():
        return (gm(split.x_test).argmax(-1) == split.y_test).float().mean().item() * 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--results", default=str(ROOT / "bench"), help="folder for the .json and .md")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    dist.init_process_group("gloo", timeout=timedelta(minutes=10))
    rank, world = dist.get_rank(), dist.get_world_size()
    split = load_digits_split()
    rows = []
    for model_name in args.models:
        cls, epochs, qat_epochs = MODELS[model_name]
        torch.manual_seed(SEED)
        float_model = train(cls(), split, epochs=epochs, lr=3e-3)
        has_bn = any(isinstance(m, nn.BatchNorm2d) for m in float_model.modules())
        for shards in ("iid", "by-label"):
            plan = shard_plan(split, shards, qat_epochs, world)
            results = {s: {"ms": []} for s in STRATEGIES}
            for _ in range(args.repeats):
                for strategy in STRATEGIES:  # interleaved: load on the shared machine hits all alike
                    gm, ms = run_qat(float_model, split, plan, strategy, qat_epochs, has_bn, rank, world)
                    results[strategy]["ms"].append(ms)
                    results[strategy]["gm"] = gm
            reference = None
            if rank == 0:
                reference = accuracy(run_qat(float_model, split, plan, "one-process", qat_epochs, has_bn, 0, 1)[0],
                                     split)
            every = act_scales(results["ours-every-step"]["gm"])
            for strategy in STRATEGIES:
                scales, acc = act_scales(results[strategy]["gm"]), accuracy(results[strategy]["gm"], split)
                per_rank = [None] * world
                dist.all_gather_object(per_rank, (scales, acc))
                if rank == 0:
                    all_scales = torch.stack([s for s, _ in per_rank])
                    spread = ((all_scales.max(0).values - all_scales.min(0).values) / all_scales.mean(0)).max()
                    rows.append({
                        "model": model_name, "shards": shards, "strategy": strategy,
                        "acc_rank0": round(per_rank[0][1], 2), "acc_rank1": round(per_rank[1][1], 2),
                        "acc_one_process": round(reference, 2),
                        "scale_spread_pct": round(spread.item() * 100, 3),
                        "scale_diff_vs_every_step_pct": round(((scales - every).abs() / every).max().item() * 100, 3),
                        "ms_per_step": round(statistics.median(results[strategy]["ms"]), 3),
                    })
            if rank == 0:
                base = next(r["ms_per_step"] for r in rows[-len(STRATEGIES):] if r["strategy"] == "naive-broadcast")
                for r in rows[-len(STRATEGIES):]:
                    r["step_time_ratio"] = round(r["ms_per_step"] / base, 3)
                    print(json.dumps(r), flush=True)
    if rank == 0:
        doc = {"command": "python -m torch.distributed.run --standalone --nproc_per_node 2 bench/distributed_qat.py",
               "world_size": world, "backend": "gloo", "repeats": args.repeats, "device": describe_device(),
               "torch": torch.__version__, "python": platform.python_version(), "rows": rows}
        out = Path(args.results)
        write_text_atomic(out / "distributed_qat.json", json.dumps(doc, indent=2) + "\n")
        write_text_atomic(out / "distributed_qat.md", render(doc))
    dist.barrier()
    dist.destroy_process_group()


def render(doc: dict) -> str:
    cpu = summary_line(doc["device"])
    lines = [
        "## Distributed QAT: naive DDP vs synced observers (2 CPU processes, gloo)", "",
        f"`{doc['command']}`", "",
        f"CPU: {cpu}; {doc['world_size']} processes, 1 thread each; {doc['repeats']} interleaved repeats; "
        "accuracy on the 360 held-out digits (1 sample = 0.28 points).", "",
        "| model | shards | strategy | acc rank 0 | acc rank 1 | acc one process | scale spread across ranks % "
        "| max scale diff vs every-step % | ms / step | × naive-broadcast |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["rows"]:
        lines.append(f"| {r['model']} | {r['shards']} | {r['strategy']} | {r['acc_rank0']} | {r['acc_rank1']} | "
                     f"{r['acc_one_process']} | {r['scale_spread_pct']} | {r['scale_diff_vs_every_step_pct']} | "
                     f"{r['ms_per_step']} | {r['step_time_ratio']} |")
    ours = [r for r in doc["rows"] if r["strategy"] == "ours"]
    naive = [r for r in doc["rows"] if r["strategy"].startswith("naive")]
    lines += [
        "",
        "- `scale spread`: the largest relative difference of an activation scale between the two ranks' "
        "converted models. Naive DDP: up to "
        f"{max(r['scale_spread_pct'] for r in naive):.2f}% (rank-dependent models, no error); "
        f"ours: {max(r['scale_spread_pct'] for r in ours):.2f}%.",
        "- `max scale diff vs every-step`: syncing only at the freezes and before convert against syncing "
        f"after every step: at most {max(r['scale_diff_vs_every_step_pct'] for r in ours):.2f}% here, because "
        "moving averages are linear in the per-step statistics; every-step syncing costs "
        f"{max(r['step_time_ratio'] for r in doc['rows'] if r['strategy'] == 'ours-every-step'):.2f}× "
        "naive DDP's step time at most here (one coalesced all-reduce per step on top).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
