"""MiniLM fine-tuned as a text classifier, then fully static int8: PTQ vs QAT by distillation.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/minilm_classifier.py

The task is built from data Python ships (no download): `pt2e_int8.app.text.topic_task`, the
prose sentences of the Python language reference (`pydoc_data.topics`) labelled by which part of
the reference they come from (statements / expressions / types / data model), split per class with
a seeded shuffle. all-MiniLM-L6-v2 (mean pooling) + a linear head is fine-tuned in float on the
train split, then quantized with every linear static int8 and outlier handling
(`QuantConfig.static(smooth=True)`):

  float        the fine-tuned model
  PTQ          q.quantize(..., QuantConfig.static(smooth=True)), calibrated on train sentences
  PTQ insert   the same with `smooth_insert=True` (QAT's start)
  QAT          pt2e_int8.app.minilm.static_qat: smoothing with `smooth_insert`, then distillation from the float
               classifier's logits on the (unlabeled) train sentences; labels are never used

Reported: held-out accuracy, agreement with the float model's predictions, and the logits' SQNR
against float, on the test split (never seen by calibration or distillation).
Writes bench/MINILM_CLASSIFIER.json and bench/MINILM_CLASSIFIER.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import pt2e_int8 as q  # noqa: E402
from pt2e_int8.app.device import describe_device, summary_line  # noqa: E402
from pt2e_int8.app.minilm import load_minilm, smooth_quantizer, static_qat, tokenize  # noqa: E402
from pt2e_int8.app.text import topic_task  # noqa: E402
from pt2e_int8.atomic import write_text_atomic  # noqa: E402

SEED = 0
SEQ = 64  # the task's sentences are at most 220 characters (< 64 tokens)


class Classifier(nn.Module):
    """A sentence encoder (mean-pooled MiniLM) and a linear head: logits per class."""

    def __init__(self, encoder: nn.Module, classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(384, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(input_ids, attention_mask))


def batches(tok, sentences: list[str], size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [tokenize(tok, sentences[i:i + size], SEQ) for i in range(0, len(sentences), size)]


def finetune(model: Classifier, train: list, labels: list[int], epochs: int, batch: int) -> list[float]:
    """Plain fine-tuning: AdamW, 3e-5 for the encoder and 1e-3 for the new head, dropout on."""
    opt = torch.optim.AdamW([{"params": model.encoder.parameters(), "lr": 3e-5},
                             {"params": model.head.parameters(), "lr": 1e-3}], weight_decay=0.01)
    y = torch.tensor(labels)
    model.train()
    losses = []
    for _ in range(epochs):
        for i, x in enumerate(train):
            loss = F.cross_entropy(model(*x), y[i * batch:(i + 1) * batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses


def evaluate(model, test: list, labels: list[int], float_logits: torch.Tensor | None) -> dict:
    with torch.no_grad():
        logits = torch.cat([model(*x) for x in test])
    y = torch.tensor(labels)
    out = {"accuracy": round(100 * (logits.argmax(1) == y).float().mean().item(), 2)}
    if float_logits is not None:
        out["agreement"] = round(100 * (logits.argmax(1) == float_logits.argmax(1)).float().mean().item(), 2)
        out["sqnr_db"] = round(q.sqnr(float_logits, logits), 2)
    return out, logits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3, help="float fine-tuning epochs")
    ap.add_argument("--qat-epochs", type=int, default=2)
    ap.add_argument("--qat-sentences", type=int, default=128, help="unlabeled train sentences to distill on")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "MINILM_CLASSIFIER")
    args = ap.parse_args()
    torch.manual_seed(SEED)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    tok, encoder = load_minilm()
    (train_s, train_y), (test_s, test_y), classes = topic_task(seed=SEED)
    batch = 16
    train, test = batches(tok, train_s, batch), batches(tok, test_s, 32)
    model = Classifier(encoder, len(classes))
    rows, times = {}, {}

    t = time.perf_counter()
    losses = finetune(model, train, train_y, args.epochs, batch)
    times["float fine-tuning s"] = time.perf_counter() - t
    model.eval()
    rows["float"], float_logits = evaluate(model, test, test_y, None)

    calibration = batches(tok, train_s[:32], 8)
    t = time.perf_counter()
    ptq = q.quantize(copy.deepcopy(model), calibration[0], calibration=calibration, quantizer=smooth_quantizer(),
                     progress=False)
    times["PTQ s"] = time.perf_counter() - t
    rows["static int8 + smooth, PTQ"], _ = evaluate(ptq, test, test_y, float_logits)
    ptq = q.quantize(copy.deepcopy(model), calibration[0], calibration=calibration,
                     quantizer=smooth_quantizer(insert=True), progress=False)
    rows["static int8 + smooth_insert, PTQ (the QAT start)"], _ = evaluate(ptq, test, test_y, float_logits)

    t = time.perf_counter()
    qat = static_qat(model, tok, calibration, SEQ, sentences=train_s[:args.qat_sentences], epochs=args.qat_epochs,
                     loss="mse", train_seq=SEQ)
    times["QAT s"] = time.perf_counter() - t
    rows["static int8 + smooth_insert, QAT by distillation"], _ = evaluate(qat, test, test_y, float_logits)

    result = {"command": " ".join(["HF_HUB_OFFLINE=1 .venv/bin/python bench/minilm_classifier.py", *sys.argv[1:]]), "cpu": summary_line(describe_device()),
              "task": {"source": "pydoc_data.topics (Python language reference)", "classes": classes,
                       "train": len(train_s), "test": len(test_s), "seq": SEQ},
              "float_finetune": {"epochs": args.epochs, "first_loss": losses[0], "last_loss": losses[-1]},
              "qat": {"epochs": args.qat_epochs, "sentences": min(args.qat_sentences, len(train_s))},
              "rows": rows, "seconds": {k: round(v, 1) for k, v in times.items()}}
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = ["## MiniLM classifier: float vs fully static int8 (PTQ, QAT by distillation)", "",
             f"`{result['command']}`", "", f"CPU: {result['cpu']}", "",
             f"Task: which part of the Python language reference a sentence comes from ({', '.join(classes)}); "
             f"{len(train_s)} train / {len(test_s)} held-out sentences from `pydoc_data.topics`, seq {SEQ}. "
             f"Float: all-MiniLM-L6-v2 + linear head fine-tuned {args.epochs} epochs. Every linear static int8 "
             f"with outlier handling (`QuantConfig.static(smooth=True)`, and `smooth_insert=True`), calibrated on 32 train "
             f"sentences; QAT (`pt2e_int8.app.minilm.static_qat`) "
             f"distils the float logits on {result['qat']['sentences']} train sentences, no labels. "
             f"1 held-out sentence = {100 / len(test_s):.2f} points.", "",
             "| model | held-out accuracy % | agreement with float % | logits SQNR dB |", "|---|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['accuracy']} | {r.get('agreement', '—')} | {r.get('sqnr_db', '—')} |")
    lines += ["", "Time: " + ", ".join(f"{k} {v:.0f}" for k, v in result["seconds"].items()), ""]
    write_text_atomic(args.out.with_suffix(".md"), "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
