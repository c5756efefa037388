"""Writing files and folders atomically, with the permissions of any file the user writes.

A file is written to a temporary sibling and renamed over its target (``open_atomic``,
``write_text``, ``write_bytes``, ``write_json``): a reader sees the old content or the new, never
half of it, and a crash leaves no half-written file. A folder is built in a temporary sibling and
swapped in whole (``building``; ``new_dir`` and ``swap_in`` are its two halves).

One permission policy: the umask's. The temporaries are created as ``open`` and ``mkdir`` create
any file (mode 0o666 and 0o777, less the process's umask), not as ``tempfile`` creates its private
ones (0o600 and 0o700), so what qidlab writes is readable by whoever may read the user's other files.
What other libraries write into a folder being built gets the same modes before it is swapped in
(safetensors writes its files 0o600); such a folder holds data, never programs.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import IO, Any, Iterator

from .errors import QidlabError


def _sibling(target: Path, tag: str) -> Path:
    """An unused hidden name beside ``target``: ``.<name>.<tag>-<pid>-<random>``."""
    return target.with_name(f".{target.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}")


@contextlib.contextmanager
def open_atomic(path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """A new file open for writing (``mode`` "w" or "wb") that replaces ``path`` when the block
    ends without an exception; on one, the file is removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = _sibling(path, "tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not exc.filename:  # a failed write (disk full): name the file
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def check_writable(path, *, folder: bool = False) -> Path:
    """``path`` as a ``Path`` once it is known that it can be written, before any work is done; a
    ``QidlabError`` naming it otherwise. A file (``folder`` false) needs an existing folder that
    takes a new file and must not be a folder itself; a folder (``folder`` true) may not be a file,
    and its nearest existing ancestor must be a folder that takes a new folder. Each is tried
    with an empty temporary sibling, created and removed (what the OS refuses, for any user)."""
    path = Path(path)
    if folder:
        if path.exists() and not path.is_dir():
            raise QidlabError(f"{path}: a file, not a folder")
        parent = next(p for p in (path, *path.parents) if p.exists() or p == Path(p.anchor))
        if not parent.is_dir():
            raise QidlabError(f"{path}: {parent} is a file, not a folder")
    else:
        if path.is_dir():
            raise QidlabError(f"{path}: cannot be written ({os.strerror(errno.EISDIR)}: a folder, not a file)")
        parent = path.parent
    probe = _sibling(parent / "probe", "writable")
    try:
        probe.mkdir() if folder else os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        raise QidlabError(f"{path}: cannot be written ({exc.strerror})") from None
    probe.rmdir() if folder else probe.unlink()
    return path


def write_text(path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with open_atomic(path, "w") as fh:
        fh.write(text)


def write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with open_atomic(path, "wb") as fh:
        fh.write(data)


def write_json(path, doc: Any, **dumps) -> None:
    """Write ``json.dumps(doc, indent=1, **dumps)`` and a newline to ``path`` atomically."""
    write_text(path, json.dumps(doc, **{"indent": 1, **dumps}) + "\n")


def read_json_object(path) -> dict:
    """The JSON object in the file at ``path``; a one-line ``QidlabError`` naming the file when it is
    not valid JSON or not an object (the counterpart of ``write_json`` for config-like files)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise QidlabError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise QidlabError(f"{path}: expected a JSON object")
    return doc


def new_dir(parent, prefix: str) -> Path:
    """A new empty folder ``<parent>/<prefix><pid>-<random>`` (``parent`` made if needed)."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        path = parent / f"{prefix}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            path.mkdir()  # 0o777 & ~umask
            return path
        except FileExistsError:
            continue


def umask() -> int:
    """The process's umask: from ``/proc/self/status`` where Linux shows it, else by setting it
    and putting it back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def give_umask_modes(root: Path) -> None:
    """``root`` and every folder under it 0o777 & ~umask, every file 0o666 & ~umask (links left alone)."""
    mask = umask()
    for folder, _, names in os.walk(root):
        os.chmod(folder, 0o777 & ~mask)
        for name in names:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, 0o666 & ~mask)


def swap_in(tmp: Path, target: Path) -> None:
    """The folder ``tmp`` becomes ``target``: whatever ``target`` held is moved aside first and
    removed after; if the rename fails, it is put back."""
    old = None
    if target.exists():
        old = _sibling(target, "old")
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def building(target) -> Iterator[Path]:
    """A new empty folder beside ``target`` to fill; when the block ends without an exception, its
    contents get the umask's modes (``give_umask_modes``) and it replaces ``target`` (``swap_in``);
    otherwise it is removed."""
    target = Path(target)
    tmp = new_dir(target.parent, f".{target.name}.tmp-")
    try:
        yield tmp
        give_umask_modes(tmp)
        swap_in(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
