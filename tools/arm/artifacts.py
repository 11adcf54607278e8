"""The artifacts `make arm-check` checks on aarch64, with real inputs beside them (`inputs.pt`).

    python -m tools.arm.artifacts digits DIR   # inputs.pt for `pt2e-int8 demo -o DIR`: held-out digits
    python -m tools.arm.artifacts minilm DIR   # all-MiniLM-L6-v2 float, dynamic and mixed .pte + .onnx, and inputs

`check` reads `DIR/inputs.pt` (a list of input tuples, one per batch) when no --inputs is given.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

SEQ = 64  # tokens: short enough that emulated runs stay within a minute or two per artifact


def digits_inputs(folder: Path) -> Path:
    """Held-out digits at batch 1 and 64 (the .pte's planned bound)."""
    from pt2e_int8.app.digits import load_digits_split

    x = load_digits_split().x_test
    path = folder / "inputs.pt"
    torch.save([(x[:1].contiguous(),), (x[1:65].contiguous(),)], path)
    return path


def mixed_quantizer():
    """Static linears, dynamic FFN: the MiniLM "mixed" config of bench/minilm_pte.py."""
    from transformers.models.bert.modeling_bert import BertIntermediate, BertOutput

    import pt2e_int8 as q
    from pt2e_int8.annotators.linear import annotate_linear

    return (q.Int8Quantizer(annotators=(annotate_linear,))
            .set_global(q.QuantConfig.static(observer="histogram"))
            .set_module_type(BertIntermediate, q.QuantConfig.dynamic())
            .set_module_type(BertOutput, q.QuantConfig.dynamic()))


def minilm(folder: Path, layers: int | None = None, prefix: str = "minilm",
           schemes: tuple[str, ...] = ("float", "dynamic", "mixed")) -> list[Path]:
    """`{prefix}-{scheme}` as .pte and .onnx for each scheme (float, static, dynamic, mixed), plus 4
    held-out sentences in `inputs.pt`. `layers` keeps only the first N encoder layers.

    The float pair is what `tools.arm.check` bounds the int8 ones with: a transformer's float
    kernels differ by a few ulps between ISAs and its run-time re-quantization amplifies that,
    so parity is judged against the artifact's own int8 error (bench/arm/ATTRIBUTION.md)."""
    import pt2e_int8 as q
    from backends.executorch import export_pte
    from backends.onnx import export_onnx
    from pt2e_int8.app.minilm import (
        CALIBRATION_SENTENCES,
        HELD_OUT_SENTENCES,
        load_minilm,
        tokenize,
    )

    folder.mkdir(parents=True, exist_ok=True)
    tok, model = load_minilm(layers)
    enc = [tokenize(tok, [s], SEQ) for s in CALIBRATION_SENTENCES]
    example = enc[0]
    configs = {"static": lambda: q.Int8Quantizer().set_global(q.QuantConfig.static()),
               "dynamic": lambda: q.Int8Quantizer().set_global(q.QuantConfig.dynamic()), "mixed": mixed_quantizer}
    written = []
    for name in schemes:
        qm = model if name == "float" else q.quantize(
            model, example, calibration=enc, quantizer=configs[name](), dynamic_shapes=None, progress=False)
        written.append(export_pte(qm, example, folder / f"{prefix}-{name}.pte", dynamic_shapes=None).path)
        written.append(export_onnx(qm, example, folder / f"{prefix}-{name}.onnx").path)
    torch.save([tokenize(tok, [s], SEQ) for s in HELD_OUT_SENTENCES[:4]], folder / "inputs.pt")
    return [Path(p) for p in written]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("digits", "minilm"))
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    if args.what == "digits":
        print(f"wrote {digits_inputs(args.folder)}")
    else:
        for p in minilm(args.folder):
            print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
