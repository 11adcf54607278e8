"""Which activation observer should `QuantConfig.static()` default to? minmax vs histogram vs percentile.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/observers.py

Static int8 (the default config, only the observer changed) on CNNs and transformers; the converted
graph is evaluated in PyTorch (the numerics every backend reproduces), so no lowering is needed.
  CNNs          torchvision mobilenet_v3_small, efficientnet_b0, regnet_x_400mf (grouped convs),
                shufflenet_v2_x1_0 and resnet18; random init, BN re-estimated; calibrated on 16 random
                images, judged by SQNR (dB) of the logits against float on 8 held-out random images
  MiniLM        all-MiniLM-L6-v2 (real weights), seq 128: mean cosine of the sentence embeddings to
                float on 16 held-out sentences (calibrated on 16 others)
  digits        the demo's MLP and a conv net trained on scikit-learn's digits: held-out accuracy
Also the calibration time of each observer. Writes bench/observers.json and bench/observers.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import pt2e_int8 as q  # noqa: E402
from pt2e_int8.atomic import write_text_atomic  # noqa: E402

OBSERVERS = ("minmax", "histogram", "percentile")
CNNS = ("mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf", "shufflenet_v2_x1_0", "resnet18")


def _cnn_task(name: str):
    from bench.arch_models import import_torchvision, reestimate_batch_norm

    torch.manual_seed(0)
    model = reestimate_batch_norm(getattr(import_torchvision().models, name)(), (1, 3, 224, 224))
    gen = torch.Generator().manual_seed(1)
    calibration = [(torch.randn(4, 3, 224, 224, generator=gen),) for _ in range(4)]
    held_out = [(torch.randn(4, 3, 224, 224, generator=gen),) for _ in range(2)]
    return model, calibration, held_out, "sqnr_db", None


def _minilm_task():
    from pt2e_int8.app.minilm import (
        CALIBRATION_SENTENCES,
        HELD_OUT_SENTENCES,
        load_minilm,
        tokenize,
    )

    tok, model = load_minilm()
    calibration = [tokenize(tok, CALIBRATION_SENTENCES[i:i + 4], 128) for i in range(0, 16, 4)]
    held_out = [tokenize(tok, HELD_OUT_SENTENCES[i:i + 4], 128) for i in range(0, 16, 4)]
    return model, calibration, held_out, "cosine", None


def _digits_task(kind: str):
    from pt2e_int8.app.digits import DigitsCNN, DigitsMLP, load_digits_split, train

    torch.manual_seed(0)
    split = load_digits_split()
    net = DigitsMLP() if kind == "mlp" else DigitsCNN()
    model = train(net, split, epochs=30 if kind == "mlp" else 15, lr=3e-3).eval()
    calibration = [(b,) for b in split.x_train[:512].split(64)]
    return model, calibration, [(b,) for b in split.x_test.split(128)], "accuracy", split.y_test


TASKS = {**{n: (lambda n=n: _cnn_task(n)) for n in CNNS}, "minilm": _minilm_task,
         "digits_mlp": lambda: _digits_task("mlp"), "digits_cnn": lambda: _digits_task("cnn")}


def _score(metric: str, ref: torch.Tensor, out: torch.Tensor, labels) -> float:
    if metric == "accuracy":
        return (out.argmax(-1) == labels).float().mean().item() * 100
    if metric == "cosine":
        return q.cosine(ref, out)
    return q.sqnr(ref, out)


def run_task(name: str) -> dict:
    model, calibration, held_out, metric, labels = TASKS[name]()
    with torch.no_grad():
        ref = torch.cat([model(*x) for x in held_out])
    row = {"metric": metric, "float": _score(metric, ref, ref, labels) if metric == "accuracy" else None}
    for observer in OBSERVERS:
        quantizer = q.Int8Quantizer().set_global(q.QuantConfig.static(observer=observer))
        t0 = time.perf_counter()
        qm = q.quantize(model, calibration[0], calibration=calibration, quantizer=quantizer, progress=False)
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            out = torch.cat([qm(*x) for x in held_out])
        row[observer] = {"score": round(_score(metric, ref, out, labels), 4), "quantize_s": round(seconds, 1)}
        print(f"{name} {observer}: {row[observer]}", flush=True)
    return row


def _best(row: dict) -> str:
    return max(OBSERVERS, key=lambda o: row[o]["score"])


def to_markdown(doc: dict) -> str:
    from pt2e_int8.config import QuantConfig

    lines = ["# Default activation observer: minmax vs histogram vs percentile", "",
             f"Command: `{doc['command']}`  ", f"Device: {doc['device']}  ",
             f"Default today: `QuantConfig.static().observer == {QuantConfig.static().observer!r}`. "
             "Static int8 everywhere else as default; converted graph evaluated in PyTorch. "
             "Scores: SQNR dB of the logits vs float (CNNs, random init with BN re-estimated, random images), "
             "mean cosine to float (MiniLM), held-out accuracy % (digits). Higher is better; best in bold. "
             "Seconds: quantize (export + calibration + convert).", "",
             "| model | metric | float | " + " | ".join(OBSERVERS) + " | " + " | ".join(f"{o} s" for o in OBSERVERS) + " |",
             "|---|---|---:|" + "---:|" * (2 * len(OBSERVERS))]
    for name, row in doc["models"].items():
        if "error" in row:
            lines.append(f"| {name} | failed: {row['error'][:150]} |")
            continue
        best = _best(row)
        scores = [f"**{row[o]['score']}**" if o == best else str(row[o]["score"]) for o in OBSERVERS]
        lines.append(f"| {name} | {row['metric']} | {row['float'] if row['float'] is not None else '—'} | "
                     + " | ".join(scores) + " | " + " | ".join(str(row[o]["quantize_s"]) for o in OBSERVERS) + " |")
    wins = {o: sum(1 for r in doc["models"].values() if "error" not in r and _best(r) == o) for o in OBSERVERS}
    lines += ["", "Best per model: " + ", ".join(f"{o} {n}" for o, n in wins.items()) + ".", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(TASKS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "bench")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    from pt2e_int8.app.device import describe_device, summary_line

    doc = {"command": "python bench/observers.py " + " ".join(sys.argv[1:]),
           "device": summary_line(describe_device()), "models": {}}
    for name in args.models.split(","):
        try:
            doc["models"][name] = run_task(name)
        except Exception as e:  # noqa: BLE001  (one model failing is one row)
            doc["models"][name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
            print(f"{name} failed: {doc['models'][name]['error']}", flush=True)
    write_text_atomic(args.out / "observers.json", json.dumps(doc, indent=2) + "\n")
    write_text_atomic(args.out / "observers.md", to_markdown(doc))
    print(to_markdown(doc))


if __name__ == "__main__":
    main()
