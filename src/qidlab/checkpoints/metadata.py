"""A checkpoint folder's ``qidlab.json``: what qidlab's trainer writes beside the weights (D, step)."""

from __future__ import annotations

from pathlib import Path

from qidlab.errors import QidlabError
from qidlab.files import read_json_object

METADATA_FILE = "qidlab.json"  # written by qidlab's trainer: {"tokens": D, "step": ...}


def read_metadata(folder: Path) -> dict:
    """The checkpoint folder's ``qidlab.json`` (``{"tokens": D, "step": N, ...}``), checked; {} when absent."""
    meta_path = folder / METADATA_FILE
    if not meta_path.is_file():
        return {}
    meta = read_json_object(meta_path)
    for key in ("tokens", "step"):
        value = meta.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise QidlabError(f"{meta_path}: key {key!r} must be a non-negative integer, got {value!r}")
    return meta
