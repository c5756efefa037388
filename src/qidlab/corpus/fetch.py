"""Fetched sources: one command downloads one artefact; a cache folder keeps it.

An ``Artefact`` names what a recipe needs: ``apt`` (a Debian package, ``apt-get download NAME``),
``npm`` (an npm package tarball, ``npm pack NAME``) or ``sdist`` (a PyPI source distribution,
``pip download --no-deps --no-binary :all: NAME``; downloaded, never installed).

``fetch(artefact, cache, fetcher)`` returns the artefact's path in the cache,
``CACHE/<kind>/<name>/<file>``, with ``artefact.json`` beside it (file name, sha256, command). A
cached artefact whose sha256 still matches is returned without fetching. Otherwise
``fetcher(artefact, workdir)`` is called with an empty temporary folder inside the cache and must
leave exactly one file there; the folder is then renamed into place, so a failed or interrupted
fetch leaves nothing behind. ``run_command``, the default fetcher, runs ``artefact.command`` in
that folder; tests pass their own fetcher. Every failure is one ``QidlabError`` that names the
source and the command.

The cache folder is ``--cache DIR``, else the environment variable ``QIDLAB_CACHE``, else
``~/.cache/qidlab/sources``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from qidlab.errors import QidlabError
from qidlab.files import new_dir
from qidlab.provenance import file_sha256

DEFAULT_CACHE = "~/.cache/qidlab/sources"
CACHE_ENV = "QIDLAB_CACHE"
INFO_FILE = "artefact.json"
KINDS = ("apt", "npm", "sdist")
FETCH_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Artefact:
    """One downloadable file: ``kind`` in ``KINDS``, ``name`` as the tool takes it."""

    kind: str
    name: str

    def __post_init__(self):
        if self.kind not in KINDS:
            raise QidlabError(f"unknown artefact kind {self.kind!r} (known: {', '.join(KINDS)})")

    @property
    def command(self) -> list[str]:
        """The download command, run in an empty folder."""
        if self.kind == "apt":
            return ["apt-get", "download", self.name]
        if self.kind == "npm":
            return ["npm", "pack", self.name]
        return [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                "--disable-pip-version-check", "-d", ".", self.name]

    @property
    def command_text(self) -> str:
        """The command as a person would type it (``pip`` for this interpreter's pip)."""
        words = ["pip", *self.command[3:]] if self.kind == "sdist" else self.command
        return " ".join(words)

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class Fetched:
    """An artefact in the cache: its ``path``, ``sha256``, and whether it was ``cached`` already."""

    artefact: Artefact
    path: Path
    sha256: str
    cached: bool

    def describe(self) -> dict:
        return {"command": self.artefact.command_text, "artefact": self.path.name, "sha256": self.sha256,
                "artefact_bytes": self.path.stat().st_size}


Fetcher = Callable[[Artefact, Path], None]


def cache_dir(cache=None) -> Path:
    """The sources cache folder: ``cache``, else ``$QIDLAB_CACHE``, else ``~/.cache/qidlab/sources``."""
    return Path(cache or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def run_command(artefact: Artefact, workdir: Path) -> None:
    """The default fetcher: ``artefact.command`` in ``workdir``; a failure is one ``QidlabError``."""
    cmd = artefact.command
    try:
        proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S)
    except FileNotFoundError:
        raise QidlabError(f"source {artefact}: `{artefact.command_text}` failed: {cmd[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise QidlabError(f"source {artefact}: `{artefact.command_text}` did not finish in {FETCH_TIMEOUT_S} s") \
            from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        errors = [ln for ln in lines if re.match(r"^(E:|ERROR|npm ERR!|npm error)", ln)] or lines
        hint = " (run `apt-get update` first?)" if artefact.kind == "apt" and "locate package" in " ".join(lines) \
            else ""
        reason = errors[-1] if errors else "no output"
        raise QidlabError(f"source {artefact}: `{artefact.command_text}` failed (exit {proc.returncode}): "
                          f"{reason}{hint}")


def _cache_entry(artefact: Artefact, cache: Path) -> Path:
    return cache / artefact.kind / re.sub(r"[^\w.=+-]", "_", artefact.name)


def _cached(artefact: Artefact, folder: Path) -> Fetched | None:
    try:
        info = json.loads((folder / INFO_FILE).read_text())
        path = folder / info["file"]
        if path.is_file() and file_sha256(path) == info["sha256"]:
            return Fetched(artefact, path, info["sha256"], cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def fetch(artefact: Artefact, cache=None, fetcher: Fetcher | None = None, log=None) -> Fetched:
    """The artefact, from the cache or fetched into it (module docstring)."""
    cache = cache_dir(cache)
    folder = _cache_entry(artefact, cache)
    found = _cached(artefact, folder)
    if found is not None:
        return found
    if log:
        log(f"fetching {artefact}: {artefact.command_text}")
    try:
        work = new_dir(cache, ".fetch-")
    except OSError as exc:
        raise QidlabError(f"source {artefact}: cannot use the cache folder {cache} ({exc.strerror})") from None
    try:
        (fetcher or run_command)(artefact, work)
        files = sorted(f for f in work.iterdir() if f.is_file())
        if len(files) != 1:
            raise QidlabError(f"source {artefact}: `{artefact.command_text}` left {len(files)} files, expected one "
                              f"({', '.join(f.name for f in files) or 'none'})")
        sha = file_sha256(files[0])
        (work / INFO_FILE).write_text(json.dumps({"file": files[0].name, "sha256": sha,
                                                  "command": artefact.command_text}, indent=1) + "\n")
        folder.parent.mkdir(parents=True, exist_ok=True)
        if folder.exists():
            shutil.rmtree(folder)
        try:
            os.replace(work, folder)
        except OSError:  # another build filled the entry meanwhile: use it
            found = _cached(artefact, folder)
            if found is None:
                raise QidlabError(f"source {artefact}: cannot store the download in {folder}") from None
            return found
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Fetched(artefact, folder / files[0].name, sha, cached=False)
