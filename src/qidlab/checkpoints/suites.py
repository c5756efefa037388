"""Suite folders as a store remembers them. A stored checkpoint path leads to its suite folder
(the layout ``<suite>/<model>/step<N>/`` of ``discover.py``); a suite folder holds its manifest
(``qidlab-suite.toml`` / ``.json``) and checkpoints whose ``config.json`` gives the vocabulary
size V (tokens).

Read by the store's publishing (a data set's manifest records each suite's manifest and V) and by
the figures (the training logs beside the checkpoints, V of the uniform-guess loss ln V).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Iterable, Sequence

from qidlab import provenance
from qidlab.checkpoints.discover import MANIFEST_NAMES
from qidlab.errors import QidlabError

#: The config.json of a suite's checkpoints, from the suite folder.
CHECKPOINT_CONFIGS = "*/step*/config.json"


def locate(stored: str | Path, store_dir: Path | None = None) -> Path:
    """A stored checkpoint path: as written, or, when relative and not found from here, relative to
    the store's folder ``store_dir`` (a sweep run from the study file's folder stores paths relative
    to it)."""
    path = Path(stored)
    if store_dir is None or path.is_absolute() or path.exists() or not (store_dir / path).exists():
        return path
    return store_dir / path


def stored_suite_folders(paths: Iterable[str | Path], store_dir: Path | None = None) -> list[Path]:
    """The suite folders of the stored checkpoint paths whose checkpoint folder exists (each path
    found with ``locate``), each once, in order."""
    found = [locate(p, store_dir) for p in paths]
    return unique_folders(p.parent.parent for p in found if p.exists())


def given_suite_folders(folders: Sequence[str | Path]) -> list[Path]:
    """Suite folders named by the user, each of which must be a folder."""
    out = []
    for s in folders:
        folder = Path(s).expanduser()
        if not folder.is_dir():
            raise QidlabError(f"`suites` {s}: no such folder", params=("suites",))
        out.append(folder)
    return out


def unique_folders(folders: Iterable[Path]) -> list[Path]:
    """``folders`` without a folder seen before (compared resolved), in order."""
    seen, out = set(), []
    for folder in folders:
        if folder.resolve() not in seen:
            seen.add(folder.resolve())
            out.append(folder)
    return out


def suite_manifest(folder: Path) -> dict[str, Any] | None:
    """A suite folder's qidlab-suite.toml / .json as it is: folder name, file name, sha256 and
    content; None when the folder has none."""
    for file_name in MANIFEST_NAMES:
        path = folder / file_name
        if path.is_file():
            text = path.read_text()
            try:
                content = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
            except (tomllib.TOMLDecodeError, ValueError) as exc:
                raise QidlabError(f"{path}: cannot parse ({exc})") from None
            return {"folder": folder.name, "file": file_name, "sha256": provenance.file_sha256(path),
                    "content": content}
    return None


def suite_name(folder: Path) -> str:
    """The suite a folder holds: its manifest's ``suite``, else the folder's name."""
    found = suite_manifest(folder)
    return str((found or {}).get("content", {}).get("suite") or folder.name)


def vocab_size(checkpoints: Iterable[str | Path], folders: Iterable[Path]) -> int | None:
    """V from the first readable config.json: of the checkpoint folders ``checkpoints``, then of
    the first checkpoint of each suite folder; None if none is found."""
    candidates = [Path(p) / "config.json" for p in checkpoints]
    candidates += [c for f in folders for c in sorted(Path(f).glob(CHECKPOINT_CONFIGS))[:1]]
    for config in candidates:
        try:
            vocab = json.loads(config.read_text()).get("vocab_size")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(vocab, int) and vocab > 1:
            return vocab
    return None
