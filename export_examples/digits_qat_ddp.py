"""Digits MLP QAT on several processes: torchrun + DDP, checkpoint and resume, one export from rank 0.

    torchrun --nproc_per_node 2 export_examples/digits_qat_ddp.py -o out/digits_ddp   # 2 CPU processes (gloo)
    python export_examples/digits_qat_ddp.py -o out/digits_single                     # the same recipe, 1 process
    torchrun --nproc_per_node 2 export_examples/digits_qat_ddp.py -o out/digits_ddp --resume   # after a crash

On GPUs and several machines: `--backend nccl` (one GPU per process) and torchrun's
rendezvous, with OUT on a filesystem every machine sees:

    torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        export_examples/digits_qat_ddp.py --backend nccl -o /shared/digits_ddp

Recipe: every rank trains the float model from the same seed (it stands in for your
pretrained checkpoint), then QAT under `wrap_ddp`. The global batch of 64 is split over
the ranks, so together they see exactly the batches a single process sees. Observers and
batch-norm statistics stay per rank and are reduced where it matters: the schedule's
freezes, each checkpoint, and before convert. Rank 0 converts and exports once.
"""

import argparse
import copy
import os
import zlib
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from _common import export_and_run, print_table, save_results

import pt2e_int8 as q
from pt2e_int8.app.digits import SEED, DigitsMLP, accuracy, load_digits_split, train

GLOBAL_BATCH = 64

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("-o", "--out", default="out/digits_ddp", help="folder for checkpoint and artifacts")
parser.add_argument("--quick", action="store_true", help="few epochs (CI smoke run)")
parser.add_argument("--backend", choices=("gloo", "nccl"), default="gloo",
                    help="gloo: CPU processes; nccl: one GPU per process (multi-node)")
parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
parser.add_argument("--checkpoint-every", type=int, default=0, help="steps between checkpoints (0: each epoch)")
args = parser.parse_args()

distributed = "WORLD_SIZE" in os.environ  # set by torchrun
if distributed:
    dist.init_process_group(args.backend, timeout=timedelta(minutes=10))
rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
device = torch.device("cpu")
if args.backend == "nccl":
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(device)
if GLOBAL_BATCH % world:
    raise SystemExit(f"the global batch {GLOBAL_BATCH} must split evenly over {world} processes")
per_rank = GLOBAL_BATCH // world
out = Path(args.out)
checkpoint = out / "checkpoint.pt"

# 1. The float model: identical on every rank (same seed); wrap_ddp would broadcast rank 0's anyway.
split = load_digits_split()
epochs, qat_epochs = (3, 1) if args.quick else (30, 3)
torch.manual_seed(SEED)
model = train(DigitsMLP(), split, epochs=epochs, lr=3e-3)
float_acc = accuracy(model(split.x_test), split.y_test)

# 2. QAT under DDP: fake-quant from the float weights; observers freeze for the last epoch.
steps_per_epoch = len(split.x_train) // GLOBAL_BATCH  # whole global batches only: equal shards
total_steps = steps_per_epoch * qat_epochs
every = args.checkpoint_every or steps_per_epoch
pm = q.prepare_qat(copy.deepcopy(model), (split.x_train[:32],)).to(device)
schedule = q.QATSchedule(pm, freeze_observers_after=steps_per_epoch * max(qat_epochs - 1, 1))
net = q.wrap_ddp(pm, device_ids=[device.index] if device.type == "cuda" else None) if distributed else pm
opt = torch.optim.Adam(pm.parameters(), lr=1e-4)
torch.manual_seed(SEED + 1 + rank)  # each rank its own dropout stream
start = q.load_qat_checkpoint(checkpoint, pm, opt, schedule)["step"] if args.resume else 0
if rank == 0 and args.resume:
    print(f"resumed from {checkpoint} at step {start}/{total_steps}")

net.train()
for step in range(start, total_steps):
    epoch, i = divmod(step, steps_per_epoch)
    order = torch.randperm(len(split.x_train), generator=torch.Generator().manual_seed(SEED + epoch))
    idx = order[i * GLOBAL_BATCH + rank * per_rank:i * GLOBAL_BATCH + (rank + 1) * per_rank]
    loss = F.cross_entropy(net(split.x_train[idx].to(device)), split.y_train[idx].to(device))
    opt.zero_grad()
    loss.backward()
    opt.step()
    schedule.step()
    if (step + 1) % every == 0 or step + 1 == total_steps:
        q.save_qat_checkpoint(checkpoint, pm, opt, schedule, extra={"step": step + 1})

# 3. One set of qparams on every rank (the checkpoint above already synced; this is the rule).
q.sync_observers(pm)
fingerprint = zlib.crc32(b"".join(t.detach().cpu().numpy().tobytes() for t in pm.state_dict().values()))
fingerprints = [fingerprint]
if distributed:
    fingerprints = [None] * world
    dist.all_gather_object(fingerprints, fingerprint)

# 4. Rank 0 converts and exports, once.
if rank == 0:
    qat = q.convert(pm.cpu())
    print(q.coverage(qat), "\n")
    r = export_and_run("qat", qat, (split.x_test[:1],), (split.x_test,), out)
    accs = [accuracy(r[k], split.y_test) * 100 for k in ("eager", "pte", "onnx")]
    header = ["model", "processes", "acc % torch", "acc % .pte", "acc % .onnx", "KB pte / onnx",
              "int8 layers", "same state on all ranks"]
    rows = [["float", 1, float_acc * 100, "", "", "", "", ""],
            ["qat", world, *accs, f"{r['pte_kb']:.1f} / {r['onnx_kb']:.1f}", r["int8_layers"],
             "yes" if len(set(fingerprints)) == 1 else f"NO: {fingerprints}"]]
    print_table(header, rows)
    save_results(out, header, rows)
if distributed:
    dist.barrier()
    dist.destroy_process_group()
