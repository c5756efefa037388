"""Provenance attached to every result: library versions, code revision, input hashes."""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

LIBRARIES = ("qidlab", "numpy", "scipy", "pandas", "pyarrow", "torch", "transformers", "autoawq")


def versions() -> dict[str, str]:
    """Installed versions of qidlab and the libraries its results depend on."""
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            # a source tree on sys.path or a library built without package metadata (as on some
            # GPU images): take the version of the module if it is imported
            version = getattr(sys.modules.get(name), "__version__", None)
            if version:
                out[name] = str(version)
    return out


@lru_cache(maxsize=1)
def code_revision() -> str:
    """The git commit of the qidlab source in use (``+dirty`` when modified), or 'unknown'."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=here, capture_output=True,
                               text=True, timeout=5).stdout.strip()
        return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device: str) -> str:
    """The hardware behind a torch device string, in words: "cuda: NVIDIA H100 80GB HBM3" or
    "cpu: x86_64" (recorded in a store's meta ``devices`` by the sweep)."""
    if device.startswith("cuda"):
        import torch

        index = torch.device(device).index
        return f"cuda: {torch.cuda.get_device_name(torch.cuda.current_device() if index is None else index)}"
    return f"cpu: {platform.machine() or 'unknown'}"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def record() -> dict[str, object]:
    """The provenance block of a result document."""
    return {"versions": versions(), "code_revision": code_revision()}
