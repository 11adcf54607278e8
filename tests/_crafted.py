"""Hostile .pt2 files for the safety tests: each carries a payload that creates a marker file if
anything runs it. Made from a real torch.export.save archive with one entry rewritten."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import torch


class Payload:
    """Unpickling this runs `exec`: it writes `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


class WithConstant(torch.nn.Module):
    """A weight (fc), a tensor constant (offset: a non-persistent buffer) and a dynamic batch."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)
        self.register_buffer("offset", torch.full((3,), 0.5), persistent=False)

    def forward(self, x):
        return self.fc(x) + self.offset


def clean_pt2(path: Path) -> Path:
    torch.manual_seed(0)
    ep = torch.export.export(WithConstant(), (torch.randn(2, 4),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, path)
    return path


def _rewrite(src: Path, dst: Path, edit) -> Path:
    """Copy a zip, passing each entry through edit(name, data) -> data (stored, CRCs recomputed)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(info, edit(info.filename, zin.read(info)))
    return dst


def _pickled(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _mark_first_pickled(config: bytes, folder_entries: dict) -> tuple[bytes, str]:
    doc = json.loads(config)
    fqn, meta = next(iter(doc["config"].items()))
    meta["use_pickle"] = True
    folder_entries["path"] = meta["path_name"]
    return json.dumps(doc).encode(), fqn


# where -> how the payload gets in
KINDS = ("weight", "constant", "sample_inputs", "shape_expression", "call_target")


def hostile_pt2(clean: Path, dst: Path, where: str, marker: Path) -> Path:
    """A copy of `clean` whose `where` entry runs the payload when torch.export.load (or the
    program) handles it as torch would."""
    payload = _pickled(Payload(marker))
    if where in ("weight", "constant"):
        folder = "data/weights/" if where == "weight" else "data/constants/"
        config_name = f"{folder}model_{'weights' if where == 'weight' else 'constants'}_config.json"
        target: dict = {}
        with zipfile.ZipFile(clean) as z:
            root = z.namelist()[0].split("/", 1)[0]
            config, _ = _mark_first_pickled(z.read(f"{root}/{config_name}"), target)

        def edit(name, data):
            if name == f"{root}/{config_name}":
                return config
            if name == f"{root}/{folder}{target['path']}":
                return payload
            return data
        return _rewrite(clean, dst, edit)
    if where == "sample_inputs":
        # not plain tensors: torch retries with an unrestricted torch.load
        inputs = _pickled(((Payload(marker),), {}))
        return _rewrite(clean, dst, lambda n, d: inputs if n.endswith("data/sample_inputs/model.pt") else d)
    if where == "shape_expression":
        code = f"open({str(marker)!r}, 'w').write('pwned')"

        def edit(name, data):
            if name.endswith("models/model.json"):
                doc = json.loads(data)
                _replace_exprs(doc, lambda e: f"(exec({code!r}) or {e})")
                return json.dumps(doc).encode()
            return data
        return _rewrite(clean, dst, edit)
    if where == "call_target":
        def edit(name, data):
            if name.endswith("models/model.json"):
                doc = json.loads(data)
                node = next(n for n in doc["graph_module"]["graph"]["nodes"] if "linear" in n["target"])
                node["target"] = "torch.serialization.os.system"
                node["inputs"] = [{"name": "command", "kind": 1,
                                   "arg": {"as_string": f"echo pwned > {marker}"}}]
                return json.dumps(doc).encode()
            return data
        return _rewrite(clean, dst, edit)
    raise ValueError(where)


def _replace_exprs(doc, fn) -> None:
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key == "expr_str" and isinstance(value, str):
                doc[key] = fn(value)
            else:
                _replace_exprs(value, fn)
    elif isinstance(doc, list):
        for value in doc:
            _replace_exprs(value, fn)


def native_crash_pte(src: Path, dst: Path) -> Path:
    """A .pte whose XNNPACK payload names a constant with a non-UTF-8 byte: ExecuTorch 1.5.1 logs the
    unknown name through pybind11, which throws UnicodeDecodeError out of a noexcept frame (SIGABRT).
    The last `scale_<hex>` key in the file is the delegate's copy."""
    import re

    data = bytearray(src.read_bytes())
    keys = [m.start() for m in re.finditer(rb"scale_[0-9a-f]{8}", data)]
    data[keys[-1] + 8] = 0xFB
    dst.write_bytes(bytes(data))
    return dst


def mutate(data: bytes, rng) -> bytes:
    """One random corruption: flipped bytes, a truncation, a duplicated or deleted chunk."""
    b = bytearray(data)
    kind = rng.choice(("flip", "flip", "flip", "truncate", "duplicate", "delete"))
    if kind == "flip":
        for _ in range(rng.choice((1, 1, 2, 4, 8))):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == "truncate":
        del b[rng.randrange(1, len(b)):]
    else:
        start = rng.randrange(len(b))
        chunk = b[start:start + rng.randrange(1, 64)]
        if kind == "duplicate":
            b[start:start] = chunk
        else:
            del b[start:start + len(chunk)]
    return bytes(b)
