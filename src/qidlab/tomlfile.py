"""Reading the project's TOML files (study files, suite files) with one clear error."""

from __future__ import annotations

import tomllib
from pathlib import Path

from .errors import QidlabError


def read_toml(path: str | Path, kind: str) -> dict:
    """The parsed ``path``; a ``QidlabError`` naming the file when it is missing or not TOML.
    ``kind`` names the file in messages (e.g. "study")."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise QidlabError(f"{path}: no such {kind} file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise QidlabError(f"{path}: not valid TOML ({exc})") from None
