"""Where MiniLM's .pte outputs part between x86 and aarch64, layer by layer, and why.

    nice -n 15 .venv/bin/python -m bench.arm.minilm_attribution [--cpu neoverse-n1] [--sentences 8]
    # writes bench/arm/ATTRIBUTION.md and .json

The same all-MiniLM-L6-v2 (seq 64) is exported three times, float / dynamic / mixed (the
`tools.arm.artifacts` recipes), as a .pte that takes the word embeddings (float) and returns every
hidden state (the embedding LayerNorm's output, then each of the 6 encoder layers) and the pooled
sentence embedding. Then:

1. ARM vs x86: `tools/arm/guest.py` runs the three files on the same held-out sentences on the x86
   host and under qemu-user; per layer, the max difference in float ulps and in steps of that
   layer's range/255, and how many tokens differ by more than float noise.
2. x86 alone: the same files on the same sentences with every input element moved by one ulp
   (random direction, several draws). How far that moves the outputs is what the int8 path makes of
   a float difference of the size the ISAs' float kernels have; no ARM involved.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
SEQ = 64
SCHEMES = ("float", "dynamic", "mixed")
LAYERS = ("embeddings", *(f"layer {i}" for i in range(1, 7)), "pooled")


class HiddenStates(torch.nn.Module):
    """(embeddings LN output, layer 1..6 outputs, masked mean) from word embeddings."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.bert = encoder.bert

    def forward(self, embeds: torch.Tensor, mask: torch.Tensor):
        hs = self.bert(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True).hidden_states
        m = mask.unsqueeze(-1).to(embeds.dtype)
        return (*hs, (hs[-1] * m).sum(1) / m.sum(1).clamp(min=1e-9))


def export(folder: Path, sentences: int) -> dict[str, Path]:
    import pt2e_int8 as q
    from backends.executorch import export_pte
    from pt2e_int8.app.minilm import (
        CALIBRATION_SENTENCES,
        HELD_OUT_SENTENCES,
        load_minilm,
        tokenize,
    )
    from tools.arm.artifacts import mixed_quantizer

    files = {s: folder / f"{s}.pte" for s in SCHEMES}
    inputs = folder / "inputs.npz"
    if all(p.is_file() for p in files.values()) and inputs.is_file():
        return files
    folder.mkdir(parents=True, exist_ok=True)
    tok, encoder = load_minilm()
    model = HiddenStates(encoder).eval()
    words = encoder.bert.embeddings.word_embeddings

    def embed(sentence: str) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = tokenize(tok, [sentence], SEQ)
        with torch.no_grad():
            return words(ids).contiguous(), mask

    calib = [embed(s) for s in CALIBRATION_SENTENCES]
    held = [embed(s) for s in HELD_OUT_SENTENCES[:sentences]]
    quantizers = {"dynamic": lambda: q.Int8Quantizer().set_global(q.QuantConfig.dynamic()), "mixed": mixed_quantizer}
    for scheme, path in files.items():
        m = model if scheme == "float" else q.quantize(
            model, calib[0], calibration=calib, quantizer=quantizers[scheme](), dynamic_shapes=None, progress=False)
        export_pte(m, calib[0], path, dynamic_shapes=None)
    arrays = {}
    for name in files.values():
        for b, (e, mask) in enumerate(held):
            arrays[f"{name.name}/{b}/0"], arrays[f"{name.name}/{b}/1"] = e.numpy(), mask.numpy()
    np.savez(inputs, **arrays)
    return files


class _Op(torch.nn.Module):
    def __init__(self, fn, module: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.fn, self.inner = fn, module

    def forward(self, *xs):
        return self.fn(self.inner, *xs)


def _op_probes() -> dict[str, tuple[torch.nn.Module, tuple[torch.Tensor, ...]]]:
    """Each float op of a BERT layer alone, at MiniLM's shapes, on BERT-like values (seeded)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, SEQ, 384, generator=g) * 2 + 0.5
    lin, ln = torch.nn.Linear(384, 384), torch.nn.LayerNorm(384)
    torch.nn.init.normal_(ln.weight, 1.0, 0.2, generator=g)
    torch.nn.init.normal_(ln.bias, 0.0, 0.2, generator=g)
    torch.nn.init.normal_(lin.weight, 0.0, 0.05, generator=g)
    return {
        "linear": (_Op(lambda m, a: m(a), lin), (x,)),
        "layer_norm": (_Op(lambda m, a: m(a), ln), (x,)),
        "rsqrt": (_Op(lambda m, a: torch.rsqrt(a)), (x.abs() + 1e-3,)),
        "sqrt": (_Op(lambda m, a: torch.sqrt(a)), (x.abs() + 1e-3,)),
        "div": (_Op(lambda m, a, b: a / b), (x, x.abs().flip(-1) + 0.5)),
        "softmax": (_Op(lambda m, a: torch.softmax(a, -1)), (torch.randn(1, 12, SEQ, SEQ, generator=g) * 3,)),
        "gelu": (_Op(lambda m, a: torch.nn.functional.gelu(a)), (torch.randn(1, SEQ, 1536, generator=g) * 2,)),
        "bmm": (_Op(lambda m, a, b: a @ b), (torch.randn(1, 12, SEQ, 32, generator=g),
                                             torch.randn(1, 12, 32, SEQ, generator=g))),
    }


def export_ops(folder: Path) -> list[Path]:
    """One float .pte per op (XNNPACK-delegated, as in MiniLM's .pte) and their inputs."""
    from backends.executorch import export_pte

    folder.mkdir(parents=True, exist_ok=True)
    probes = _op_probes()
    files = [folder / f"{name}.pte" for name in probes]
    if all(p.is_file() for p in files) and (folder / "inputs.npz").is_file():
        return files
    arrays = {}
    for (module, xs), path in zip(probes.values(), files, strict=True):
        export_pte(module.eval(), xs, path, dynamic_shapes=None)
        for i, t in enumerate(xs):
            arrays[f"{path.name}/0/{i}"] = t.numpy()
    np.savez(folder / "inputs.npz", **arrays)
    return files


def op_table(folder: Path, where: str) -> list[dict]:
    rows = []
    for name in _op_probes():
        ref, got = _outputs(folder / "x86", f"{name}.pte")[(0, 0)], _outputs(folder / where, f"{name}.pte")[(0, 0)]
        err = np.abs(got.astype(np.float64) - ref)
        rows.append({"op": name, "max_abs": float(err.max()), "max_ulps": _ulps(ref, got),
                     "differ": float((err > 0).mean())})
    return rows


def _outputs(run_dir: Path, name: str) -> dict[tuple[int, int], np.ndarray]:
    with np.load(run_dir / f"{name}.npz") as z:
        return {tuple(map(int, k.split("/"))): z[k] for k in z.files}


def run_guest(cmd_prefix: list[str], env, folder: Path, out: Path) -> float:
    files = sorted(str(p) for p in folder.glob("*.pte"))
    t0 = time.perf_counter()
    subprocess.run([*cmd_prefix, str(REPO / "tools/arm/guest.py"), "--inputs", str(folder / "inputs.npz"),
                    "--out", str(out), *files], env=env, check=True, timeout=7200)
    return time.perf_counter() - t0


def _ulps(ref: np.ndarray, got: np.ndarray) -> float:
    """Max |got - ref| in float32 ulps of the largest |ref| (per-element ulps blow up near zero)."""
    err = np.abs(got.astype(np.float64) - ref.astype(np.float64)).max()
    return float(err / np.spacing(np.abs(ref.astype(np.float32)).max()))


def layer_table(ref: dict, got: dict, mask: list[np.ndarray]) -> list[dict]:
    """Per layer: max ulps, max steps (range/255 of the reference), tokens off by > 1e-3 of the range."""
    rows = []
    for o, layer in enumerate(LAYERS):
        ulps, steps, tokens, total = [], [], 0, 0
        for b, m in enumerate(mask):
            r, g = ref[(b, o)], got[(b, o)]
            if r.ndim == 3:  # [1, seq, hidden]: real tokens only
                keep = m[0].astype(bool)
                r, g = r[0, keep], g[0, keep]
            step = float(r.max() - r.min()) / 255
            err = np.abs(g.astype(np.float64) - r)
            ulps.append(_ulps(r, g))
            steps.append(float(err.max()) / step)
            off = (err.reshape(err.shape[0] if err.ndim > 1 else 1, -1).max(-1) > 1e-3 * 255 * step)
            tokens += int(off.sum())
            total += off.size
        rows.append({"layer": layer, "max_ulps": max(ulps), "max_steps": max(steps),
                     "steps_per_sentence": steps, "tokens_off": tokens, "tokens": total})
    return rows


def perturbation(folder: Path, draws: int, seed: int = 0) -> dict[str, list[dict]]:
    """x86 only: every input element moved one ulp up or down at random; outputs vs the unmoved run."""
    from backends.executorch.runtime import load_pte

    with np.load(folder / "inputs.npz") as z:
        arrays = {k: z[k] for k in z.files}
    rng = np.random.default_rng(seed)
    out = {}
    for scheme in SCHEMES:
        name = f"{scheme}.pte"
        prog = load_pte(folder / name, threads=1)
        n = 1 + max(int(k.split("/")[1]) for k in arrays if k.startswith(name))
        masks = [arrays[f"{name}/{b}/1"] for b in range(n)]
        base, moved = {}, {}
        for b in range(n):
            e, m = arrays[f"{name}/{b}/0"], arrays[f"{name}/{b}/1"]
            for o, v in enumerate(prog.run([torch.from_numpy(e), torch.from_numpy(m)])):
                base[(b, o)] = v.numpy()
        per_draw = []
        for _ in range(draws):
            for b in range(n):
                e, m = arrays[f"{name}/{b}/0"], arrays[f"{name}/{b}/1"]
                direction = np.where(rng.random(e.shape) < 0.5, -np.inf, np.inf).astype(np.float32)
                e2 = np.nextafter(e, direction).astype(np.float32)
                for o, v in enumerate(prog.run([torch.from_numpy(e2), torch.from_numpy(m)])):
                    moved[(b, o)] = v.numpy()
            per_draw.append(layer_table(base, moved, masks))
        out[scheme] = per_draw
    return out


# A second x86 for control: the same host python under qemu-x86_64 as a Haswell (AVX2 + FMA, no
# AVX-512), so XNNPACK and ONNX Runtime pick their AVX2 kernels. Two x86 CPUs, no ARM involved.
X86_CONTROL = "x86-avx2"


def _guest_prefix(where: str) -> tuple[list[str], dict | None]:
    from tools.arm.cache import ArmCache, cache_root, guest_command, guest_env

    if where == X86_CONTROL:
        return ["qemu-x86_64-static", "-cpu", "Haswell-v4", sys.executable], None
    cache = ArmCache(cache_root())
    return guest_command(cache, where, []), guest_env(cache, [str(REPO)])


def report(doc: dict) -> str:
    wheres = list(doc["ops"])
    lines = ["# MiniLM .pte, x86 vs aarch64: where the outputs part", "",
             f"Made by `{doc['command']}` (wall seconds {json.dumps({k: round(v) for k, v in doc['seconds'].items()})}); "
             f"x86 = the host, {doc['x86_cpu']} (AVX-512, VNNI, AMX); {', '.join(wheres)} under qemu-user "
             f"({doc['qemu']}; `{X86_CONTROL}`: the host's python under qemu-x86_64 `-cpu Haswell-v4`, AVX2 + FMA, "
             "no AVX-512). "
             f"{doc['sentences']} held-out sentences, seq {SEQ}, batch 1. ulps: float32 ulps of the layer's "
             "largest |x86 value|; steps: range/255 of the x86 output of that layer and sentence (real tokens "
             "only); \"off\": (sentence, token) rows differing by more than 1e-3 of the range.", "",
             "## 1. Each float op alone (float .pte, XNNPACK)", "",
             "| op | " + " | ".join(f"{w}: max abs / ulps / elements differing" for w in wheres) + " |",
             "|---|" + "---:|" * len(wheres)]
    for i, op in enumerate(r["op"] for r in doc["ops"][wheres[0]]):
        cells = [doc["ops"][w][i] for w in wheres]
        lines.append(f"| {op} | " + " | ".join(
            f"{c['max_abs']:.2g} / {c['max_ulps']:.1f} / {100 * c['differ']:.1f} %" for c in cells) + " |")
    lines += ["", "## 2. The whole model, layer by layer", ""]
    for scheme in SCHEMES:
        pert = doc["x86_one_ulp"][scheme]
        lines += [f"### {scheme}", "",
                  "| layer | " + " | ".join(f"{w} vs x86: ulps / steps / off" for w in wheres)
                  + " | x86, input ±1 ulp: steps / off (worst of draws) |",
                  "|---|" + "---:|" * (len(wheres) + 1)]
        for i, layer in enumerate(LAYERS):
            cells = [doc["whole"][w][scheme][i] for w in wheres]
            p_steps = max(d[i]["max_steps"] for d in pert)
            p_off = max(d[i]["tokens_off"] for d in pert)
            lines.append(f"| {layer} | " + " | ".join(
                f"{_fmt(c['max_ulps'])} / {c['max_steps']:.2f} / {c['tokens_off']}/{c['tokens']}" for c in cells)
                + f" | {p_steps:.2f} / {p_off}/{cells[0]['tokens']} |")
        lines.append("")
        for w in wheres:
            per = ", ".join(f"{x:.2f}" for x in doc["whole"][w][scheme][-1]["steps_per_sentence"])
            lines.append(f"- pooled, {w} vs x86, per sentence (steps): {per}")
        per = "; ".join(", ".join(f"{x:.2f}" for x in d[-1]["steps_per_sentence"]) for d in pert)
        lines += [f"- pooled, x86 ±1 ulp, per draw and sentence (steps): {per}"]
        if scheme != "float":
            q = doc["int8_error"][scheme]
            lines.append("- int8 error of the pooled output vs the float .pte on the same CPU, max over sentences "
                         "(steps): " + ", ".join(f"{w} {v:.2f}" for w, v in q.items()))
        lines.append("")
    return "\n".join(lines) + "\n"


def _fmt(x: float) -> str:
    return f"{x:.3g}" if x < 1000 else f"{x:.2e}"


def int8_error(folder: Path, wheres: list[str], n: int) -> dict[str, dict[str, float]]:
    """Max over sentences of |int8 pooled - float pooled| in steps, each on its own CPU."""
    out = {}
    for scheme in SCHEMES[1:]:
        out[scheme] = {}
        for w in ["x86", *wheres]:
            f, q = _outputs(folder / w, "float.pte"), _outputs(folder / w, f"{scheme}.pte")
            o = len(LAYERS) - 1
            out[scheme][w] = max(float(np.abs(q[(b, o)] - f[(b, o)]).max()) / (float(np.ptp(q[(b, o)])) / 255)
                                 for b in range(n))
    return out


def main(argv: list[str] | None = None) -> int:
    from tools.arm.cache import ArmCache, cache_root, status

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="append", default=None,
                        help=f"emulated CPU model, or {X86_CONTROL} (repeatable; default neoverse-n1 {X86_CONTROL})")
    parser.add_argument("--sentences", type=int, default=8)
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--work", type=Path, default=REPO / "out/arm-attribution")
    parser.add_argument("--out", type=Path, default=REPO / "bench/arm/ATTRIBUTION")
    args = parser.parse_args(argv)
    wheres = args.cpu or ["neoverse-n1", X86_CONTROL]
    ready, why = status()
    if not ready:
        print(f"aarch64 emulation unavailable: {why}", file=sys.stderr)
        return 2
    folder, ops = args.work, args.work / "ops"
    export(folder, args.sentences)
    export_ops(ops)
    seconds = {}
    for where in ["x86", *wheres]:
        prefix, env = ([sys.executable], None) if where == "x86" else _guest_prefix(where)
        for f, last in ((ops, "softmax.pte.npz"), (folder, "mixed.pte.npz")):
            if where == "x86" or not (f / where / last).is_file():  # emulated runs are kept
                seconds[f"{where} {f.name}"] = run_guest(prefix, env, f, f / where)
    with np.load(folder / "inputs.npz") as z:
        masks = [z[f"float.pte/{b}/1"] for b in range(args.sentences)]
    whole = {w: {s: layer_table(_outputs(folder / "x86", f"{s}.pte"), _outputs(folder / w, f"{s}.pte"), masks)
                 for s in SCHEMES} for w in wheres}
    device = json.loads((folder / "x86" / "float.pte.json").read_text())["device"]
    doc = {"command": "python -m bench.arm.minilm_attribution " + " ".join(argv if argv is not None else sys.argv[1:]),
           "x86_cpu": device.get("cpu_model"), "qemu": ArmCache(cache_root()).manifest().get("qemu"),
           "sentences": args.sentences, "seconds": seconds, "ops": {w: op_table(ops, w) for w in wheres},
           "whole": whole, "int8_error": int8_error(folder, wheres, args.sentences),
           "x86_one_ulp": perturbation(folder, args.draws)}
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    text = report(doc)
    md = args.out.with_suffix(".md")
    if md.is_file() and "<!-- findings -->" in md.read_text():  # keep the hand-written findings below the tables
        text += "\n<!-- findings -->" + md.read_text().split("<!-- findings -->", 1)[1]
    md.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
