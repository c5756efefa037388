"""Study presets: published studies as study files (``qidlab study init NAME --out study.toml``).

A preset is a TOML study file shipped in ``qidlab/sweep/presets/``: ``ouyang2024`` (the paper's
Pythia study, Ouyang et al. 2024) and ``olmo2`` (one OLMo-2 trajectory). ``write_preset`` copies one
out, so a user can read it, edit it (point ``reference_tokenizer`` at a local file, drop sizes) and
run it with ``qidlab sweep``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..errors import QidlabError, did_you_mean
from ..files import write_text


def preset_names() -> list[str]:
    """The shipped presets, sorted."""
    return sorted(f.name.removesuffix(".toml") for f in resources.files(__package__).joinpath("presets").iterdir()
                  if f.name.endswith(".toml"))


def preset_text(name: str) -> str:
    """The study file of preset ``name``; ``QidlabError`` with a did-you-mean for an unknown one."""
    names = preset_names()
    if name not in names:
        raise QidlabError(f"unknown preset {name!r} (known: {', '.join(names)})" + did_you_mean(name, names),
                          params=("name",))
    return resources.files(__package__).joinpath("presets", f"{name}.toml").read_text(encoding="utf-8")


def write_preset(name: str, out, *, force: bool = False) -> Path:
    """Write preset ``name`` to ``out`` (atomically); an existing ``out`` is refused unless ``force``."""
    text = preset_text(name)
    out = Path(out).expanduser()
    if out.exists() and not force:
        raise QidlabError(f"{out} exists: choose another `out` or pass `force` to overwrite it",
                          params=("out", "force"))
    if out.is_dir():
        raise QidlabError(f"{out} is a folder: `out` names the study file to write", params=("out",))
    write_text(out, text)
    return out
