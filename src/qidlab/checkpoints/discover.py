"""Find the checkpoints of a suite laid out like Pythia's: ``<suite>/<model>/step<N>/``.

A suite root may carry a manifest, ``qidlab-suite.toml`` (or ``qidlab-suite.json``)::

    suite = "pythia"                  # optional; default: the folder's name
    tokens_per_step = 2097152         # D = step * tokens_per_step (Pythia: 1024 x 2048)
    bos_is_eos = true                 # optional: the tokenizer's BOS is its EOS (qidlab.train.data);
                                      #   false: a BOS the models never saw in training

    [tokens]                          # optional explicit D per checkpoint, "<model>/step<N>"
    "pythia-70m/step1000" = 2097152000

    [models.pythia-70m]               # optional per-model settings and free-form info
    tokens_per_step = 2097152         # overrides the suite's
    tokens = { step1000 = 2097152000 }
    family = "pythia"                 # any other key is kept in CheckpointRef.info
    run = "seed1"                     # which training run of the model (the store's checkpoints.run):
                                      # a fit's bootstrap draws each run of a model as a cluster

Tokens D of a checkpoint, first found wins: the ``tokens`` of the checkpoint folder's own
``qidlab.json``; the manifest's explicit ``tokens`` (per model, then suite-wide); ``step *
tokens_per_step`` (per model, then suite-wide); else ``None``.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from qidlab.checkpoints.metadata import read_metadata
from qidlab.errors import QidlabError
from qidlab.tomlfile import Key, check_table

MANIFEST_NAMES = ("qidlab-suite.toml", "qidlab-suite.json")
_STEP_DIR = re.compile(r"^step(\d+)$")
# the manifest's top-level keys (their values are checked below, with messages of their own)
MANIFEST_KEYS = {"suite": Key(), "tokens_per_step": Key(), "tokens": Key(), "models": Key(),
                 "bos_is_eos": Key("bool")}


@dataclass(frozen=True)
class CheckpointRef:
    """One checkpoint of a suite, found on disk but not loaded (``load_checkpoint(ref)`` loads it).

    A Hub checkpoint (``checkpoints.hub``) has ``repo`` and ``revision``, suite = the repo id, model =
    the repo name, and ``path`` = its snapshot folder once resolved (``None`` before)."""

    suite: str
    model: str
    step: int
    path: Path | None
    tokens: int | None  # D, training tokens seen; None when nothing says
    tokens_source: str | None = None  # "qidlab.json" | "manifest" | "tokens_per_step" | "revision" | None
    info: dict = field(default_factory=dict, compare=False, hash=False)  # the manifest's per-model info
    repo: str | None = None  # Hub repo id ("EleutherAI/pythia-160m"); None for a local folder
    revision: str | None = None  # Hub revision ("step1000")

    @property
    def location(self) -> str:
        """Where the checkpoint lives, as the store records it: the folder, or ``hf://REPO@REVISION``."""
        return f"hf://{self.repo}@{self.revision}" if self.repo else str(self.path)


def _count(value, where: str, key: str, *, positive: bool) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and (value > 0 if positive else value >= 0)
    if not ok:
        kind = "a positive" if positive else "a non-negative"
        raise QidlabError(f"{where}: key {key!r} must be {kind} integer, got {value!r}")
    return value


def _step_key(key: str, where: str, table: str) -> int:
    m = _STEP_DIR.match(str(key)) or re.match(r"^(\d+)$", str(key))
    if not m:
        raise QidlabError(f"{where}: key {table}.{key!r} must name a step, like 'step1000'")
    return int(m.group(1))


def read_manifest(suite_root: str | Path) -> dict:
    """The suite manifest, validated: ``{"suite", "tokens_per_step", "tokens", "models", "bos_is_eos"}``
    (``bos_is_eos``: None when the manifest does not say).

    ``tokens`` maps ``(model, step)`` to D; ``models`` maps a model name to
    ``{"tokens_per_step", "tokens": {step: D}, "info": {...}}``. No manifest: an empty one.
    """
    root = Path(suite_root)
    found = [root / n for n in MANIFEST_NAMES if (root / n).is_file()]
    out = {"suite": None, "tokens_per_step": None, "tokens": {}, "models": {}, "file": None, "bos_is_eos": None}
    if not found:
        return out
    if len(found) > 1:
        raise QidlabError(f"{root}: both {MANIFEST_NAMES[0]} and {MANIFEST_NAMES[1]}; keep one")
    path = found[0]
    where = str(path)
    try:
        raw = tomllib.loads(path.read_text()) if path.suffix == ".toml" else json.loads(path.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise QidlabError(f"{where}: cannot parse ({exc})") from None
    if not isinstance(raw, dict):
        raise QidlabError(f"{where}: expected a table/object at the top level")
    check_table(raw, MANIFEST_KEYS, where, "the suite manifest")
    out["file"] = path
    out["bos_is_eos"] = raw.get("bos_is_eos")
    if "suite" in raw:
        if not isinstance(raw["suite"], str) or not raw["suite"]:
            raise QidlabError(f"{where}: key 'suite' must be a non-empty string, got {raw['suite']!r}")
        out["suite"] = raw["suite"]
    if "tokens_per_step" in raw:
        out["tokens_per_step"] = _count(raw["tokens_per_step"], where, "tokens_per_step", positive=True)
    tokens = raw.get("tokens", {})
    if not isinstance(tokens, dict):
        raise QidlabError(f"{where}: key 'tokens' must be a table of \"<model>/step<N>\" = tokens")
    for key, value in tokens.items():
        model, sep, step = str(key).rpartition("/")
        if not sep or not model:
            raise QidlabError(f"{where}: key tokens.{key!r} must look like \"<model>/step<N>\"")
        out["tokens"][(model, _step_key(step, where, "tokens"))] = _count(value, where, f"tokens.{key}",
                                                                          positive=False)
    models = raw.get("models", {})
    if not isinstance(models, dict):
        raise QidlabError(f"{where}: key 'models' must be a table of per-model tables")
    for name, spec in models.items():
        if not isinstance(spec, dict):
            raise QidlabError(f"{where}: key models.{name} must be a table")
        entry = {"tokens_per_step": None, "tokens": {}, "info": {}}
        for key, value in spec.items():
            if key == "tokens_per_step":
                entry["tokens_per_step"] = _count(value, where, f"models.{name}.tokens_per_step", positive=True)
            elif key == "tokens":
                if not isinstance(value, dict):
                    raise QidlabError(f"{where}: key models.{name}.tokens must be a table of step<N> = tokens")
                for step, d in value.items():
                    entry["tokens"][_step_key(step, where, f"models.{name}.tokens")] = _count(
                        d, where, f"models.{name}.tokens.{step}", positive=False)
            else:
                entry["info"][key] = value
        out["models"][name] = entry
    return out


def _is_checkpoint(folder: Path) -> bool:
    return folder.is_dir() and (folder / "config.json").is_file()


def _folder_tokens(folder: Path) -> int | None:
    return read_metadata(folder).get("tokens")


def _discover_suite(root: Path) -> list[CheckpointRef]:
    manifest = read_manifest(root)
    suite = manifest["suite"] or root.resolve().name
    refs = []
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        steps = [(int(m.group(1)), d) for d in model_dir.iterdir() if (m := _STEP_DIR.match(d.name))]
        for _, d in steps:
            if d.is_dir() and not _is_checkpoint(d):  # e.g. a step being written by hand, or a copy cut short
                print(f"qidlab: note: {d} has no config.json: skipped", file=sys.stderr, flush=True)
        steps = [(step, d) for step, d in steps if _is_checkpoint(d)]
        per_model = manifest["models"].get(model_dir.name, {"tokens_per_step": None, "tokens": {}, "info": {}})
        for step, d in sorted(steps):
            tokens, source = _folder_tokens(d), "qidlab.json"
            if tokens is None:
                tokens = per_model["tokens"].get(step, manifest["tokens"].get((model_dir.name, step)))
                source = "manifest"
            if tokens is None:
                tps = per_model["tokens_per_step"] or manifest["tokens_per_step"]
                tokens, source = (step * tps, "tokens_per_step") if tps else (None, None)
            refs.append(CheckpointRef(suite=suite, model=model_dir.name, step=step, path=d, tokens=tokens,
                                      tokens_source=source, info=dict(per_model["info"])))
    return refs


def discover(root: str | Path) -> list[CheckpointRef]:
    """The checkpoints under ``root``, sorted by suite, model, then step.

    ``root`` is a suite folder (``root/<model>/step<N>/config.json``) or a folder of suites
    (``root/<suite>/<model>/step<N>/``). Each suite root may hold a manifest (module docstring).
    Nothing found, or a missing root: ``QidlabError``.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise QidlabError(f"suite folder does not exist: {root}")
    refs = _discover_suite(root)
    if not refs:
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            refs += _discover_suite(sub)
    if not refs:
        raise QidlabError(f"no checkpoints under {root}: expected <suite>/<model>/step<N>/config.json")
    return sorted(refs, key=lambda r: (r.suite, r.model, r.step))
