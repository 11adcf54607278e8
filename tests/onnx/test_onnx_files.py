"""Files: byte-identical re-exports, atomic writes, no dead initializers."""

from __future__ import annotations

import onnx
import pytest

import backends.onnx.export as export_mod
from backends.onnx import export_onnx
from pt2e_int8.errors import LoweringError


def test_same_inputs_give_byte_identical_files(block_case, tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    export_onnx(block_case.qm, (block_case.inputs,), a)
    export_onnx(block_case.qm, (block_case.inputs,), b)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() == block_case.path.read_bytes()  # and identical to the session fixture's file


def test_failed_export_leaves_no_file_and_keeps_the_old_one(block_case, tmp_path, monkeypatch):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous")

    def broken_checker(*args, **kwargs):
        raise onnx.checker.ValidationError("injected")

    monkeypatch.setattr(export_mod.onnx.checker, "check_model", broken_checker)
    with pytest.raises(LoweringError, match="invalid: injected"):
        export_onnx(block_case.qm, (block_case.inputs,), target)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


@pytest.mark.parametrize("name", ["block", "block_qop"])
def test_no_dead_initializers_or_metadata(block_case, block_qop, name):
    model = onnx.load(str({"block": block_case, "block_qop": block_qop}[name].path))
    used = {i for n in model.graph.node for i in n.input}
    dead = [i.name for i in model.graph.initializer if i.name not in used]
    assert not dead, dead
    assert not any(n.metadata_props for n in model.graph.node)  # no stack traces with local paths
