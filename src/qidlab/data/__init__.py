"""Data sets shipped with qidlab, loadable by name (see README.md here for provenance).

``path(name)`` gives the file of a bundled data set; ``resolve(name_or_path)`` accepts either a
bundled name or a file path, which is what the command line does with its DATA argument."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..errors import QidlabError

BUNDLED = {
    "ouyang2024-table1": "ouyang2024_table1.csv",
    "chinchilla-epoch": "chinchilla_epoch.csv",
}


def path(name: str) -> Path:
    """The file of bundled data set ``name``."""
    if name not in BUNDLED:
        raise QidlabError(f"no bundled data set {name!r} (bundled: {', '.join(BUNDLED)})")
    return Path(str(resources.files(__package__).joinpath(BUNDLED[name])))


def resolve(name_or_path: str) -> Path:
    """A bundled data set's file if ``name_or_path`` names one, else the path itself."""
    return path(name_or_path) if name_or_path in BUNDLED else Path(name_or_path)


def load(name_or_path: str):
    """The validated canonical table (``qidlab.tables.read_table``) of a bundled set or file."""
    from ..tables import read_table

    return read_table(resolve(name_or_path))
