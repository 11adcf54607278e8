"""Fuzzing the command line (issue 10): mutated .pte / .onnx / .pt2 files, random input-file layouts
and random flag combinations.

Every run must end with exit 0 or 2 (1 only for a broken `--max-steps` bound), print no traceback
without --debug, never die by a signal, and leave every pre-existing file as it was (a failed run
writes nothing at all). Seeded and bounded for `make test`; a longer run:

    PT2E_INT8_FUZZ_SCALE=20 PT2E_INT8_FUZZ_SEED=7 .venv/bin/pytest tests/cli/test_fuzz.py

Native crashes need other processes: mutated artifacts go through the real child-process probe
(batched: one child for all files, plus one per file that kills it), mutated .pt2 files are first
loaded in a child (`_fuzz_child.py`); only what survived there is run in this process.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from pt2e_int8.app import probe as probe_module
from pt2e_int8.errors import InputFileError
from pt2e_int8.numerics import flatten_outputs
from tests._crafted import mutate
from tests.cli._cli import run_in_process
from tests.cli.test_hardening import snapshot

SCALE = int(os.environ.get("PT2E_INT8_FUZZ_SCALE", "1"))
SEED = int(os.environ.get("PT2E_INT8_FUZZ_SEED", "0"))
ROOT = Path(__file__).resolve().parents[2]
STATUSES: list[int] = []  # every exit status, for a look with -s
FUZZ = settings(max_examples=12 * SCALE, deadline=None, database=None, derandomize=False,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


@pytest.fixture(scope="module", autouse=True)
def _summary():
    """What the runs ended with, printed at the end of the module (visible with -s)."""
    yield
    print(f"\nfuzz exit statuses: {dict(sorted((s, STATUSES.count(s)) for s in set(STATUSES)))}")


def run_checked(args: list, cwd: Path, capsys, *, may_write: tuple[str, ...] = ()) -> int:
    """Run the command in-process and check the promises; returns its exit status."""
    before = snapshot(cwd)
    try:
        rc, _, err = run_in_process(*args, cwd=cwd, capsys=capsys)
    except SystemExit as e:  # argparse's usage errors
        rc, err = e.code, capsys.readouterr().err
    shown = " ".join(map(str, args))
    assert rc in (0, 2) or (rc == 1 and "off by" in err), f"{shown}: exit {rc}\n{err[-3000:]}"
    if "--debug" not in map(str, args):
        assert "Traceback" not in err, f"{shown}\n{err[-3000:]}"
    STATUSES.append(rc)
    if rc == 2:
        assert "error:" in err, f"{shown}: exit 2 without a message\n{err[-2000:]}"
    after = snapshot(cwd)
    if rc != 0:
        assert after == before, f"{shown}: a failed run changed {sorted(set(after.items()) ^ set(before.items()))}"
    else:
        changed = [k for k in before if after.get(k) != before[k]]
        assert all(k.startswith(may_write) for k in changed) if may_write else not changed, (shown, changed)
    return rc


def _write_mutants(src: Path, dest: Path, n: int, rng: random.Random) -> list[Path]:
    dest.mkdir(exist_ok=True)
    data = src.read_bytes()
    out = []
    for i in range(n):
        path = dest / f"{src.stem}_{i}{src.suffix}"
        path.write_bytes(mutate(data, rng))
        out.append(path)
    return out


def _classify(paths: list[Path], **probe_kwargs) -> dict[str, str]:
    """The real probe over all files: path -> its error, for files that kill (or hang) the child."""
    killed: dict[str, str] = {}
    remaining = [str(p) for p in paths]
    while remaining:
        try:
            probe_module.probe_artifacts(remaining, timeout=120, **probe_kwargs)
            break
        except InputFileError as e:
            bad = next(p for p in remaining if str(e).startswith(f"{p}:"))
            killed[bad] = str(e)
            remaining = remaining[remaining.index(bad) + 1:]
    return killed


class _KnownVerdict:
    """Stands for a started probe whose verdict is already known."""

    def __init__(self, paths, killed: dict[str, str]):
        self.paths, self.killed = [str(p) for p in paths], killed

    def wait(self) -> None:
        for p in self.paths:
            if p in self.killed:
                raise InputFileError(self.killed[p])

    def cancel(self) -> None:
        pass


def _patch_probe(monkeypatch, killed: dict[str, str]) -> None:
    """bench / compare consult known verdicts (or none: a good file) instead of starting a child."""
    monkeypatch.setattr("pt2e_int8.app.commands.compare.probe_artifacts",
                        lambda paths, **kwargs: _KnownVerdict(paths, killed).wait())
    monkeypatch.setattr("pt2e_int8.app.commands.bench.start_probe",
                        lambda paths, **kwargs: _KnownVerdict(paths, killed))


def _use_probe_results(monkeypatch, killed: dict[str, str]) -> None:
    """bench / compare consult the batched probe's verdicts instead of starting a child per file."""
    _patch_probe(monkeypatch, killed)


def test_mutated_artifacts_never_take_the_command_down(work, exported, converted_pt2, monkeypatch, capsys):
    _, exp = exported
    rng = random.Random(SEED)
    n = 16 * SCALE
    files = (_write_mutants(exp / "model.pte", work / "fuzz_art", n, rng)
             + _write_mutants(exp / "model.onnx", work / "fuzz_art", n, rng))
    killed_bench = _classify(files, batch=1, first_batch_only=True)
    killed_compare = _classify(files, inputs=str(work / "inputs.pt"), arity=1)
    statuses = []
    for path in files:
        _use_probe_results(monkeypatch, killed_bench)
        statuses.append(run_checked(["bench", path, "--iters", "1", "--warmup", "0"], work, capsys))
        _use_probe_results(monkeypatch, killed_compare)
        statuses.append(run_checked(["compare", path, "--reference", converted_pt2, "--inputs", "inputs.pt"],
                                    work, capsys))
    print(f"\n{len(files)} mutated artifacts: {statuses.count(0)} runs ok, {statuses.count(2)} exit 2, "
          f"{len(killed_bench)} killed the probe child (bench), {len(killed_compare)} (compare)")
    assert statuses.count(2) > 0


def _json_mutation(doc, rng: random.Random):
    """Replace, delete or duplicate one random field of a JSON document (in place)."""
    paths = []

    def walk(node, trail):
        if isinstance(node, dict):
            for k, v in node.items():
                paths.append((node, k))
                walk(v, trail + [k])
        elif isinstance(node, list):
            for i, v in enumerate(node):
                paths.append((node, i))
                walk(v, trail + [i])

    walk(doc, [])
    if not paths:
        return doc
    parent, key = rng.choice(paths)
    action = rng.choice(("replace", "replace", "delete", "duplicate"))
    if action == "delete" and isinstance(parent, dict):
        del parent[key]
    elif action == "duplicate" and isinstance(parent, list):
        parent.insert(key, parent[key])
    else:
        parent[key] = rng.choice([None, -1, 0, 7, 2**40, 1e308, "", "x", "torch.ops.aten.nope.default",
                                  [], {}, True, "Symbol('s0', integer=True)"])
    return doc


def _structural_mutants(src: Path, dest: Path, n: int, rng: random.Random) -> list[Path]:
    """Archives with one JSON entry mutated and valid CRCs: they get past the zip layer into torch."""
    dest.mkdir(exist_ok=True)
    with zipfile.ZipFile(src) as z:
        entries = [(info, z.read(info)) for info in z.infolist()]
    json_names = [info.filename for info, _ in entries if info.filename.endswith(".json")]
    out = []
    for i in range(n):
        target = rng.choice(json_names)
        path = dest / f"structural_{i}.pt2"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zout:
            for info, data in entries:
                if info.filename == target:
                    data = json.dumps(_json_mutation(json.loads(data), rng)).encode()
                zout.writestr(info, data)
        out.append(path)
    return out


def test_mutated_pt2_files(work, exported, converted_pt2, monkeypatch, capsys):
    _, exp = exported
    rng = random.Random(SEED + 1)
    n = 12 * SCALE
    files = (_write_mutants(converted_pt2, work / "fuzz_pt2", n, rng)
             + _structural_mutants(converted_pt2, work / "fuzz_pt2", n, rng))
    child = subprocess.run([sys.executable, "-m", "tests.cli._fuzz_child", str(work / "example.pt"),
                            str(converted_pt2), *map(str, files)], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    lines = [json.loads(ln) for ln in child.stdout.splitlines() if ln.startswith("{")]
    started = [ln["start"] for ln in lines if "start" in ln]
    assert child.returncode == 0, f"loading {started[-1] if started else '?'} ended the process: " \
                                  f"{child.returncode}\n{child.stderr[-2000:]}"
    outcomes = {ln["path"]: ln["outcome"] for ln in lines if "outcome" in ln}
    assert outcomes.pop(str(converted_pt2)) == "ok", "the unmutated file must load and run"
    other = {p: o for p, o in outcomes.items() if o.startswith("other")}
    assert not other, other
    monkeypatch.setattr("pt2e_int8.app.commands.compare.probe_artifacts", lambda *a, **k: None)  # a good artifact
    for path in files:
        run_checked(["compare", exp / "model.onnx", "--reference", path, "--inputs", "inputs.pt"], work, capsys)
    print(f"\n{len(files)} mutated .pt2: {sum(o == 'ok' for o in outcomes.values())} still load and run")


# -- input files --------------------------------------------------------------------------------------
DTYPES = (torch.float32, torch.float32, torch.float16, torch.float64, torch.int64, torch.int32, torch.bool,
          torch.uint8)
FILLS = ("randn", "randn", "zeros", "nan", "inf", "huge", "tiny")


def _tensor(shape, dtype, fill) -> torch.Tensor:
    gen = torch.Generator().manual_seed(sum(shape) + len(shape))
    t = torch.randn(shape, generator=gen) if all(d > 0 for d in shape) else torch.zeros(shape)
    t = {"zeros": t * 0, "nan": t.masked_fill(t > 1, float("nan")), "inf": t.masked_fill(t > 1, float("inf")),
         "huge": t * 1e30, "tiny": t * 1e-30}.get(fill, t)
    return t.to(dtype) if dtype.is_floating_point else t.clamp(-100, 100).nan_to_num(0).to(dtype)


shapes = st.one_of(st.just((8, 16)), st.tuples(st.integers(0, 9), st.just(16)),
                   st.lists(st.integers(0, 5), max_size=3).map(tuple))
tensors = st.builds(_tensor, shapes, st.sampled_from(DTYPES), st.sampled_from(FILLS))
payloads = st.recursive(
    st.one_of(tensors, tensors, st.none(), st.integers(-3, 3), st.text(max_size=3)),
    lambda kids: st.one_of(st.lists(kids, max_size=3), st.lists(kids, max_size=3).map(tuple),
                           st.dictionaries(st.text(max_size=2), kids, max_size=2)),
    max_leaves=5)


def _save(obj, kind: str, path: Path) -> Path:
    if kind == "pt":
        torch.save(obj, path.with_suffix(".pt"))
        return path.with_suffix(".pt")
    if kind == "npz":
        arrays = [t.numpy() for t in flatten_outputs(obj)] or [np.array([None, 1], dtype=object)]
        np.savez(path.with_suffix(".npz"), *arrays)
        return path.with_suffix(".npz")
    path = path.with_suffix(".pt")
    path.write_bytes(repr(obj).encode()[:200])  # not a pickle at all
    return path


input_files = st.tuples(payloads, st.sampled_from(("pt", "pt", "npz", "junk")))


@FUZZ
@seed(SEED)
@given(input_files, st.sampled_from(("compare", "bench")))
def test_random_input_files(work, exported, converted_pt2, monkeypatch, capsys, file, command):
    """The artifact is the known-good export (no probe child needed); the input file varies."""
    _, exp = exported
    _patch_probe(monkeypatch, {})
    path = _save(file[0], file[1], work / "fuzz_input")
    try:
        if command == "compare":
            ref = str(converted_pt2) if len(str(path)) % 2 else "model.py:build"
            run_checked(["compare", exp / "model.onnx", "--reference", ref, "--inputs", path], work, capsys)
        else:
            run_checked(["bench", exp / "model.onnx", "--inputs", path, "--iters", "1", "--warmup", "0"], work, capsys)
    finally:
        path.unlink(missing_ok=True)


calibration_like = st.one_of(
    st.lists(st.builds(lambda b, fill: (_tensor((b, 16), torch.float32, fill),), st.integers(0, 9),
                       st.sampled_from(FILLS)), min_size=0, max_size=3),
    payloads)


@settings(FUZZ, max_examples=6 * SCALE)
@seed(SEED)
@given(calibration_like, st.sampled_from(("--calibration", "--example-inputs")))
def test_random_export_input_files(work, capsys, obj, flag):
    path = _save(obj, "pt", work / "fuzz_calib")
    try:
        run_checked(["export", "model.py:build", flag, path, "--format", "onnx", "-o", "fuzz_out"], work, capsys,
                    may_write=("fuzz_out/",))
    finally:
        path.unlink(missing_ok=True)


# -- flag combinations ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def odd_paths(work) -> Path:
    (work / "fz_dir.onnx").mkdir(exist_ok=True)
    (work / "fz_dir").mkdir(exist_ok=True)
    if not (work / "fz_fifo.onnx").exists():
        os.mkfifo(work / "fz_fifo.onnx")
    return work


ARTIFACTS = ("EXP/model.onnx", "EXP/model.pte", "junk.onnx", "junk.pte", "gone.onnx", "fz_dir.onnx",
             "fz_fifo.onnx", "model.tflite", "model.py")
OPTIONS = {
    "--iters": ("1", "2", "0", "-1", "x", ""),
    "--warmup": ("0", "1", "-2", "1e3"),
    "--threads": ("1", "2", "0", "-1"),
    "--batch": ("1", "3", "0", "100", "2.5"),
    "--inputs": ("inputs.pt", "example.pt", "gone.pt", "fz_dir", "junk.pt2", "model.py"),
    "--json": ("fz.json", "fz_dir", "", "inputs.pt", "EXP/model.onnx", "fz_dir/new.json"),
    "--max-steps": ("1", "0", "-1", "nan", "inf", "x"),
    "--reference": ("model.py:build", "QM", "gone.pt2", "junk.pt2", "model.py:broken", "model.py:nothere",
                    "inputs.pt"),
    "--frobnicate": ("1",),
}
bench_or_compare = st.tuples(
    st.sampled_from(("bench", "compare")),
    st.lists(st.sampled_from(ARTIFACTS), min_size=0, max_size=2),
    st.dictionaries(st.sampled_from(sorted(OPTIONS)), st.integers(0, 99), max_size=4),
    st.booleans())


@FUZZ
@seed(SEED)
@given(bench_or_compare)
def test_random_bench_and_compare_flags(work, exported, converted_pt2, odd_paths, monkeypatch, capsys, combo):
    _, exp = exported
    command, artifacts, options, debug = combo
    _patch_probe(monkeypatch, {})  # only the known-good exports get this far, never a mutated file
    args = [command, *artifacts]
    for flag, pick in options.items():
        if command == "bench" and flag in ("--reference", "--max-steps"):
            continue
        if command == "compare" and flag in ("--iters", "--warmup", "--threads", "--batch"):
            continue
        values = OPTIONS[flag]
        args += [flag, values[pick % len(values)]]
    if debug:
        args.insert(0, "--debug")
    args = [a.replace("EXP", str(exp)).replace("QM", str(converted_pt2)) for a in args]
    run_checked(args, work, capsys, may_write=("fz.json", "fz_dir/new.json"))


EXPORT_OPTIONS = {
    "--format": ("onnx", "onnx,onnx", "tflite", "", ",", "ONNX"),
    "--scheme": ("static", "dynamic", "weight-only", "int4"),
    "--calibration": ("calib.pt", "calib_nan.pt", "gone.pt", "fz_dir", "example.pt", "model.py"),
    "--example-inputs": ("example.pt", "inputs.pt", "gone.pt", "calib.pt"),
    "--keep-float": ("fc1", "fc9", "fc1 fc2", ""),
    "-o": ("fz_export", "model.py", "", "fz_dir"),
}
exports = st.tuples(
    st.sampled_from(("model.py:build", "model.py:bare", "model.py:broken", "QM", "junk.pt2", "gone.py:x",
                     "model.py")),
    st.dictionaries(st.sampled_from(sorted(EXPORT_OPTIONS)), st.integers(0, 99), max_size=3),
    st.booleans())


@settings(FUZZ, max_examples=10 * SCALE)
@seed(SEED)
@given(exports)
def test_random_export_flags(work, converted_pt2, odd_paths, capsys, combo):
    model, options, debug = combo
    args = ["export", model.replace("QM", str(converted_pt2))]
    options.setdefault("-o", 0)
    options.setdefault("--format", 0)  # the .pte lowering takes seconds per run: fuzzed elsewhere
    for flag, pick in options.items():
        values = EXPORT_OPTIONS[flag]
        value = values[pick % len(values)]
        args += [flag, *(value.split() or [""])] if flag == "--keep-float" else [flag, value]
    if debug:
        args.append("--debug")
    run_checked(args, work, capsys, may_write=("fz_export/", "fz_dir/"))

