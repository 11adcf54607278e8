"""load_pt2: a .pt2 never runs code from the file unless trust=True (pt2e_int8/pt2_file.py)."""

from __future__ import annotations

import logging
import operator
import os

import pytest
import torch

import pt2e_int8 as q
from pt2e_int8.pt2_file import unsafe_call_targets, unsafe_expression
from tests._crafted import KINDS, clean_pt2, hostile_pt2

# The kinds torch.export.load itself runs (the call target one its verifier refuses on its own).
RUN_BY_TORCH = ("weight", "constant", "sample_inputs", "shape_expression")


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return clean_pt2(tmp_path_factory.mktemp("pt2") / "clean.pt2")


def test_clean_file_loads_and_runs(clean):
    ep = q.load_pt2(clean)
    x = torch.randn(3, 4)
    eager = torch.export.load(clean).module()(x)
    assert torch.equal(ep.module()(x), eager)
    assert [tuple(t.shape) for t in ep.example_inputs[0]] == [(2, 4)]


@pytest.mark.parametrize("where", KINDS)
def test_hostile_file_is_refused_without_running_the_payload(clean, tmp_path, where):
    marker = tmp_path / "pwned"
    bad = hostile_pt2(clean, tmp_path / f"{where}.pt2", where, marker)
    with pytest.raises(q.InputFileError) as info:
        q.load_pt2(bad)
    assert not marker.exists(), "the payload ran"
    message = str(info.value)
    assert str(bad) in message
    if where != "call_target":  # torch's own verifier names that one
        assert isinstance(info.value, q.UnsafeModelFileError)
        assert "--trust-model-file" in message and "trust=True" in message
        entry = {"weight": "data/weights/weight_0", "constant": "data/constants/tensor_0",
                 "sample_inputs": "data/sample_inputs/model.pt", "shape_expression": "models/model.json"}[where]
        assert entry in message, message
        assert ("exec" in message) or ("not plain sympy" in message), message


@pytest.mark.parametrize("where", RUN_BY_TORCH)
def test_trust_loads_as_torch_does(clean, tmp_path, where):
    """The crafted files are really hostile: the opt-in load runs their payload (so the test above can fail)."""
    marker = tmp_path / "pwned"
    bad = hostile_pt2(clean, tmp_path / f"{where}.pt2", where, marker)
    try:
        q.load_pt2(bad, trust=True)
    except q.InputFileError:
        pass  # torch may reject what the payload returned; it ran first
    assert marker.exists()


def test_graph_calling_a_python_function_is_flagged():
    gm = torch.export.export(torch.nn.Linear(2, 2), (torch.randn(1, 2),)).graph_module
    assert unsafe_call_targets(gm) == []
    node = next(n for n in gm.graph.nodes if n.op == "call_function")
    with gm.graph.inserting_after(node):
        gm.graph.call_function(os.system, ("true",))
        gm.graph.call_function(operator.getitem, ((1, 2), 0))
    assert unsafe_call_targets(gm) == ["posix.system"]


@pytest.mark.parametrize("expr", [
    "Symbol('s31', positive=True, integer=True)",
    "Mul(Integer(2), Symbol('s0', integer=True, positive=True))",
    "FloorDiv(Symbol('s0', integer=True, positive=True), Integer(-2))",
    "StrictLessThan(Symbol('u0', integer=True), Float('0.5', precision=53))",
])
def test_shape_expressions_torch_writes_are_accepted(expr):
    assert unsafe_expression(expr) is None


@pytest.mark.parametrize("expr", [
    "__import__('os').system('true')",
    "Symbol('s0').__class__",
    "exec('x=1') or Symbol('s0')",
    "(lambda: 1)()",
    "Symbol('s0') + open('/etc/passwd')",
    "Integer(10**10**10)",
    "getattr(Symbol, 'func')",
])
def test_other_expressions_are_refused(expr):
    assert unsafe_expression(expr) is not None


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not a zip", b"\x00" * 100, b"just text"],
                         ids=["empty", "truncated-zip", "zeros", "text"])
def test_unreadable_file_is_input_error_without_torch_logs(tmp_path, content, caplog):
    path = tmp_path / "bad.pt2"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING), pytest.raises(q.InputFileError, match="not a readable .pt2 archive"):
        q.load_pt2(path)
    assert not [r for r in caplog.records if r.name.startswith("torch")], caplog.text


def test_truncated_real_archive_and_non_files(clean, tmp_path):
    data = clean.read_bytes()
    (tmp_path / "half.pt2").write_bytes(data[: len(data) // 2])
    with pytest.raises(q.InputFileError, match="truncated, corrupt"):
        q.load_pt2(tmp_path / "half.pt2")
    (tmp_path / "dir.pt2").mkdir()
    with pytest.raises(q.InputFileError, match="not a regular file"):
        q.load_pt2(tmp_path / "dir.pt2")
    os.mkfifo(tmp_path / "fifo.pt2")
    with pytest.raises(q.InputFileError, match="not a regular file"):  # and does not block reading it
        q.load_pt2(tmp_path / "fifo.pt2")
    with pytest.raises(q.InputFileError, match="no such file"):
        q.load_pt2(tmp_path / "missing.pt2")


def test_duplicate_entries_are_refused(clean, tmp_path):
    import zipfile

    dup = tmp_path / "dup.pt2"
    with zipfile.ZipFile(clean) as zin, zipfile.ZipFile(dup, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info))
        first = zin.infolist()[0]
        zout.writestr(first.filename, zin.read(first))
    with pytest.raises(q.UnsafeModelFileError, match="more than once"):
        q.load_pt2(dup)
