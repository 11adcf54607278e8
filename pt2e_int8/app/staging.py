"""A command's output files, built in a staging folder and moved into place all together, or not at all.

    staging folder in DIR (locked while its run lives) → every file written there
    → commit: hard-link each file it replaces into the folder (the backup), write a journal,
      rename the new files in one by one, delete the journal (the commit point)
    → a failed rename: the renamed files are put back from the backups, and the error names the file

So after any run, every pre-existing file in DIR is either byte-identical or every output is the
new one. SIGTERM and Ctrl-C are held back during the commit (the command line turns SIGTERM into an
exception, so a staging folder is removed on the way out). A run killed with SIGKILL leaves its
folder behind; the next run in DIR finds it unlocked, rolls an interrupted commit back from its
journal and backups, and removes it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from pt2e_int8.atomic import default_file_mode
from pt2e_int8.errors import OutputPathError

STAGING_PREFIX = ".pt2e-int8-staging-"
_LOCK, _JOURNAL, _BACKUP = ".lock", ".journal.json", ".backup"
_INTERNAL = {_LOCK, _JOURNAL, _BACKUP}
# A staging folder with no lock file is being created right now, or was left by a run killed in
# the microseconds between creating it and its lock: only the latter is old.
_UNLOCKED_GRACE_S = 60.0


def _os_problem(e: OSError) -> str:
    return e.strerror or str(e)


@contextlib.contextmanager
def staged_output(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a staging folder inside `out_dir`; on success move all its files into `out_dir` at once.

    Raises:
        OutputPathError: `out_dir` is empty, a file, or not writable; a file in the way cannot be
            replaced. Nothing in `out_dir` has changed when it is raised.

    Example:
        with staged_output("out") as stage:
            (stage / "model.pte").write_bytes(data)   # out/model.pte appears only at the end
    """
    out = _checked_dir(out_dir)
    created = _make_dirs(out)
    committed = False
    try:
        remove_stale_staging(out)
        stage, lock_fd = _new_staging(out)
        try:
            yield stage
            _commit(stage, out)
            committed = True
        finally:
            shutil.rmtree(stage, ignore_errors=True)
            os.close(lock_fd)
    finally:
        if not committed:
            for d in reversed(created):  # folders this run made, if it leaves nothing in them
                with contextlib.suppress(OSError):
                    d.rmdir()


def _checked_dir(out_dir: str | os.PathLike) -> Path:
    if not os.fspath(out_dir).strip():
        raise OutputPathError("-o is empty: pass the directory for the outputs, e.g. -o out.")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"-o {out} is an existing file, not a directory: pass a directory path for the outputs.")
    return out


def _make_dirs(out: Path) -> list[Path]:
    missing = []
    d = out.absolute()
    while not d.exists():
        missing.append(d)
        d = d.parent
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputPathError(f"-o {out}: cannot create the directory ({_os_problem(e)}). "
                              "Pass a directory you can write to.") from e
    return list(reversed(missing))


def _new_staging(out: Path) -> tuple[Path, int]:
    try:
        stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
        fd = os.open(stage / _LOCK, os.O_CREAT | os.O_RDWR, 0o600)
    except OSError as e:
        raise OutputPathError(f"-o {out}: cannot write there ({_os_problem(e)}). "
                              "Pass a directory you can write to, or fix its permissions.") from e
    fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel however this process ends
    return stage, fd


def check_targets(out_dir: str | os.PathLike, names: Iterable[str]) -> None:
    """An output name taken by a directory, FIFO or device would fail its rename or lose that
    entry: say so before any work."""
    blocked = []
    for n in names:
        p = Path(out_dir) / n
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            mode = p.lstat().st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
                blocked.append(f"{p} ({'a directory' if stat.S_ISDIR(mode) else 'not a regular file'})")
    if blocked:
        raise OutputPathError(f"{', '.join(blocked)}: in the way of an output file. "
                              "Move it away or pass another -o directory.")


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGTERM / SIGINT wait until the commit or its rollback has finished."""
    held = {signal.SIGTERM, signal.SIGINT}
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (AttributeError, ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def _dir_lock(out: Path) -> Iterator[None]:
    """One commit at a time in a directory (two runs into the same -o)."""
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _commit(stage: Path, out: Path) -> None:
    names = sorted(f.name for f in stage.iterdir() if f.name not in _INTERNAL and f.is_file())
    check_targets(out, names)
    backup = stage / _BACKUP
    backup.mkdir()
    mode = default_file_mode()
    with _dir_lock(out), _signals_held():
        replaced = []
        for n in names:
            if os.path.lexists(out / n):
                try:
                    _back_up(out / n, backup / n)
                except OSError as e:
                    raise OutputPathError(
                        f"{out / n} cannot be backed up before it is replaced ({_os_problem(e)}); nothing in "
                        f"{out} was changed. Make it readable, or pass another -o directory."
                    ) from e
                replaced.append(n)
        (stage / _JOURNAL).write_text(json.dumps({"names": names, "replaced": replaced}))
        done: list[str] = []
        for n in names:
            try:
                os.chmod(stage / n, mode)
                os.replace(stage / n, out / n)
            except OSError as e:
                failed = _rollback(out, backup, done, replaced)
                left = f" Could not restore {', '.join(failed)}: copies are in {backup}." if failed else ""
                raise OutputPathError(
                    f"{out / n} cannot be replaced ({_os_problem(e)}), so no output was written: the files "
                    f"already moved were put back and {out} is as before.{left} Make {out / n} replaceable "
                    "(permissions, chattr -i) or pass another -o directory."
                ) from e
            done.append(n)
        (stage / _JOURNAL).unlink()  # the commit point: from here on the new set is the result


def _back_up(target: Path, copy: Path) -> None:
    """A hard link (the same bytes, no copy); a real copy where the filesystem or the file's
    attributes (immutable) refuse links."""
    try:
        os.link(target, copy, follow_symlinks=False)
    except OSError:
        shutil.copy2(target, copy, follow_symlinks=False)


def _rollback(out: Path, backup: Path, done: list[str], replaced: list[str]) -> list[str]:
    failed = []
    for n in reversed(done):
        try:
            if n in replaced:
                os.replace(backup / n, out / n)
            else:
                (out / n).unlink(missing_ok=True)
        except OSError:
            failed.append(n)
    return failed


def remove_stale_staging(out_dir: str | os.PathLike) -> list[Path]:
    """Remove staging folders of runs that died (SIGKILL, power loss), rolling back a commit they
    were in the middle of. Folders of live runs (locked) are left alone. Returns what was removed."""
    out = Path(out_dir)
    removed = []
    try:
        candidates = [p for p in out.iterdir() if p.name.startswith(STAGING_PREFIX) and p.is_dir()]
    except OSError:
        return removed
    for stage in candidates:
        fd = None
        try:
            fd = os.open(stage / _LOCK, os.O_RDWR)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                if time.time() - stage.stat().st_mtime < _UNLOCKED_GRACE_S:
                    continue
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                if fd is not None:
                    os.close(fd)
                continue  # a live run
            raise
        try:
            _recover(stage, out)
            shutil.rmtree(stage, ignore_errors=True)
            removed.append(stage)
        finally:
            if fd is not None:
                os.close(fd)
    return removed


def _recover(stage: Path, out: Path) -> None:
    """Undo the renames of a commit that was killed before its commit point."""
    try:
        journal = json.loads((stage / _JOURNAL).read_text())
    except (OSError, ValueError):
        return  # no commit started (or it was complete): nothing in out was touched
    for n in journal.get("names", []):
        if not isinstance(n, str) or "/" in n or n in ("", ".", ".."):
            continue  # not a name this module writes
        if (stage / n).exists():
            continue  # never renamed
        if n in journal.get("replaced", []):
            with contextlib.suppress(OSError):
                os.replace(stage / _BACKUP / n, out / n)
        else:
            with contextlib.suppress(OSError):
                (out / n).unlink()
