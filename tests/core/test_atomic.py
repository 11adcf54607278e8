import os
import stat

import pytest

from pt2e_int8.atomic import atomic_path, write_text_atomic


def test_success_replaces_with_normal_mode(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_failure_keeps_existing_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("user's file")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("export failed")
    assert target.read_text() == "user's file"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
