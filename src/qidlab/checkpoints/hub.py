"""Checkpoints on the Hugging Face Hub: a repo's revisions as ``CheckpointRef``s, resolved to snapshot folders.

A Hub checkpoint is ``(repo, revision)``: Pythia's ``("EleutherAI/pythia-160m", "step1000")``, OLMo-2's
``("allenai/OLMo-2-1124-7B", "stage1-step1000-tokens5B")``. ``hub_refs`` names them without touching
the network; ``resolve`` brings one into the Hugging Face cache with ``huggingface_hub.snapshot_download``
(only the files a model needs: ``ALLOW_PATTERNS``, pickled weights only with ``allow_pickle``) and returns
its snapshot folder. ``huggingface_hub`` itself honours ``HF_HOME`` / ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``
and ``HF_TOKEN`` and shows download progress on stderr. ``forget`` deletes a measured revision from the
cache (its snapshot and the blobs no other cached revision shares) through ``scan_cache_dir``.

Every failure is one ``QidlabError`` naming repo and revision and saying what to do.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from qidlab.checkpoints.discover import CheckpointRef
from qidlab.errors import QidlabError

HUB_PREFIX = "hf://"
ALLOW_PATTERNS = ("config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
                  "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                  "tokenizer.model", "added_tokens.json")
PICKLE_PATTERNS = ("pytorch_model*.bin", "pytorch_model.bin.index.json")
_STEP = re.compile(r"step(\d+)")


@dataclass(frozen=True)
class Revision:
    """One checkpoint of a trajectory: the Hub revision, its step, D (training tokens seen)."""

    name: str
    step: int
    tokens: int | None


@dataclass(frozen=True)
class HubSource:
    """A study's Hub checkpoints: every repo at every revision."""

    repos: tuple[str, ...]
    revisions: tuple[Revision, ...]
    allow_pickle: bool = False  # also download and load pickled weights (torch.load(weights_only=True))
    keep: bool = True  # False: delete a revision from the cache once measured (``forget``)

    def refs(self) -> list[CheckpointRef]:
        return hub_refs(self.repos, list(self.revisions))


def allow_patterns(allow_pickle: bool) -> list[str]:
    """The file patterns ``resolve`` downloads: config, safetensors, tokenizer; pickles only on request."""
    return [*ALLOW_PATTERNS, *(PICKLE_PATTERNS if allow_pickle else ())]


def weight_patterns(names, allow_pickle: bool) -> list[str]:
    """The patterns to download from a revision holding files ``names``: pickled weights only when
    allowed and the revision has no safetensors (a revision with both is not downloaded twice)."""
    return allow_patterns(allow_pickle and not any(n.endswith(".safetensors") for n in names))


def step_revisions(template: str, steps, tokens_per_step: int | None) -> list[Revision]:
    """Pythia's form: revision ``template.format(step=s)`` per step, D = s x ``tokens_per_step`` (tokens)."""
    if "{step}" not in template:
        raise QidlabError(f"`revision` must contain {{step}} (like \"step{{step}}\"), not {template!r}",
                          params=("revision",))
    return [Revision(template.format(step=int(s)), int(s), int(s) * tokens_per_step if tokens_per_step else None)
            for s in steps]


def named_revisions(names, tokens_from_revision: str | None = None, tokens_unit: float = 1.0,
                    tokens_per_step: int | None = None) -> list[Revision]:
    """An explicit list of revisions. Step: ``step(\\d+)`` in the name, else the list index. D: the first
    group of ``tokens_from_revision`` (a regex) x ``tokens_unit`` (tokens per unit, e.g. 1e9 for "5B"),
    else step x ``tokens_per_step``."""
    pattern = re.compile(tokens_from_revision) if tokens_from_revision else None
    out, seen = [], {}
    for i, name in enumerate(names):
        m = _STEP.search(name)
        step = int(m.group(1)) if m else i
        if step in seen:
            raise QidlabError(f"revisions {seen[step]!r} and {name!r} both give step {step}: keep one",
                              params=("revisions",))
        seen[step] = name
        out.append(Revision(name, step, _tokens(name, pattern, tokens_unit, step, tokens_per_step)))
    return out


def _tokens(name: str, pattern, unit: float, step: int, tokens_per_step: int | None) -> int | None:
    if pattern is None:
        return step * tokens_per_step if tokens_per_step else None
    m = pattern.search(name)
    if not m or not m.groups():
        raise QidlabError(f"revision {name!r}: `tokens_from_revision` {pattern.pattern!r} matches nothing (it needs "
                          f"one group around the number, like \"tokens(\\\\d+)B\")", params=("tokens_from_revision",))
    return int(round(float(m.group(1)) * unit))


def revision_step(revision: str | None) -> int | None:
    """The step a revision's name gives (``step<N>`` anywhere in it), else None."""
    m = _STEP.search(revision or "")
    return int(m.group(1)) if m else None


def hub_refs(repos, revisions: list[Revision]) -> list[CheckpointRef]:
    """One ``CheckpointRef`` per repo x revision: suite = repo id, model = repo name, ``path`` None until
    ``resolve`` (``ref.location`` is ``hf://REPO@REVISION``). No network."""
    return [CheckpointRef(suite=repo, model=repo.rpartition("/")[2], step=r.step, path=None, tokens=r.tokens,
                          tokens_source="revision" if r.tokens is not None else None, repo=repo, revision=r.name)
            for repo in repos for r in revisions]


def parse_location(location: str) -> tuple[str, str | None]:
    """``hf://REPO@REVISION`` (or ``hf://REPO``) -> (repo, revision or None)."""
    repo, _, revision = location.removeprefix(HUB_PREFIX).partition("@")
    return repo, revision or None


def looks_like_repo(text: str) -> bool:
    """``ORG/NAME`` with Hub characters and no such path on disk: a Hub repo id, not a folder."""
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text)) and not Path(text).exists()


def is_offline() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub reads it."""
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def resolve(repo: str, revision: str | None, *, allow_pickle: bool = False, quiet: bool = False) -> Path:
    """The snapshot folder of ``repo`` at ``revision`` in the Hugging Face cache, downloading what the
    cache lacks (config, safetensors, tokenizer; pickled weights only with ``allow_pickle``)."""
    from huggingface_hub import snapshot_download

    if not quiet and not is_offline():
        print(f"hub: {repo}@{revision or 'main'} (only files not yet cached are downloaded)", file=sys.stderr,
              flush=True)
    try:
        patterns = allow_patterns(allow_pickle)
        if allow_pickle and not is_offline():  # pickles only where the revision has no safetensors
            from huggingface_hub import HfApi

            info = HfApi().model_info(repo, revision=revision)
            patterns = weight_patterns([s.rfilename for s in info.siblings or []], allow_pickle)
        return Path(snapshot_download(repo, revision=revision, allow_patterns=patterns))
    except Exception as exc:
        raise hub_error(exc, repo, revision) from None


def resolve_ref(ref: CheckpointRef, *, allow_pickle: bool = False) -> CheckpointRef:
    """``ref`` with ``path`` = its snapshot folder (a local ref as it is)."""
    if ref.repo is None:
        return ref
    return dataclasses.replace(ref, path=resolve(ref.repo, ref.revision, allow_pickle=allow_pickle, quiet=True))


def hub_error(exc: Exception, repo: str, revision: str | None) -> QidlabError:
    """huggingface_hub's exception as one line naming repo and revision and what to do."""
    from huggingface_hub.errors import (GatedRepoError, HFValidationError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    where = f"{repo}@{revision or 'main'}"
    if isinstance(exc, GatedRepoError):
        return QidlabError(f"{repo} is gated: accept its terms on https://huggingface.co/{repo} and set HF_TOKEN "
                           f"(or run `hf auth login`)")
    if isinstance(exc, RepositoryNotFoundError):
        return QidlabError(f"{repo}: no such repo on the Hub (check the id; a private repo needs HF_TOKEN)")
    if isinstance(exc, RevisionNotFoundError):
        return QidlabError(f"{repo} has no revision {revision!r} (see its branches and tags on "
                           f"https://huggingface.co/{repo})")
    if isinstance(exc, HFValidationError):
        return QidlabError(f"{repo!r} is not a Hub repo id (expected ORG/NAME)")
    if isinstance(exc, LocalEntryNotFoundError):
        if not _repo_cached(repo):
            return QidlabError(f"{repo}: not in the Hugging Face cache and HF_HUB_OFFLINE=1: download it online "
                               f"first (or check the id and HF_HUB_CACHE)")
        return QidlabError(f"{where}: revision {revision!r} is not in the offline cache: download it with "
                           f"HF_HUB_OFFLINE unset, or drop it from the study")
    return QidlabError(f"{where}: {type(exc).__name__}: {exc}".splitlines()[0])


def _repo_cached(repo: str) -> bool:
    """Whether the cache holds any revision of ``repo`` (its ``models--ORG--NAME`` folder)."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    return (Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo, repo_type="model")).is_dir()


def check_available(refs: list[CheckpointRef], *, allow_pickle: bool = False) -> list[CheckpointRef]:
    """Fail before anything is measured when a repo or revision cannot be had.

    Offline: each revision must be cached; the refs come back resolved (``path`` = snapshot folder).
    Online: each repo must be readable (``auth_check``: unknown or gated repos) and each revision a
    branch, tag or commit of it; the refs come back as they are (downloaded when measured)."""
    if is_offline():
        return [resolve_ref(r, allow_pickle=allow_pickle) for r in refs]
    from huggingface_hub import HfApi

    api = HfApi()
    for repo in dict.fromkeys(r.repo for r in refs if r.repo):
        wanted = {r.revision for r in refs if r.repo == repo}
        try:
            api.auth_check(repo)
            git = api.list_repo_refs(repo)
        except Exception as exc:
            raise hub_error(exc, repo, None) from None
        names = {b.name for b in git.branches} | {t.name for t in git.tags}
        missing = sorted(w for w in wanted if w not in names and not re.fullmatch(r"[0-9a-f]{40}", w))
        if missing:
            raise QidlabError(f"{repo} has no revision {missing[0]!r} ({len(missing)} of the study's missing; see its "
                              f"branches on https://huggingface.co/{repo})")
    return refs


def download_sizes(ref: CheckpointRef, *, allow_pickle: bool = False) -> tuple[bool, int | None]:
    """(cached, bytes) of a Hub ref: bytes on disk when cached, the Hub's file sizes when online and not
    cached, ``None`` offline and not cached (size unknown offline)."""
    cached = _cached_folder(ref, allow_pickle)
    if cached is not None:
        return True, sum(f.stat().st_size for f in cached.rglob("*") if f.is_file())
    if is_offline():
        return False, None
    from huggingface_hub import HfApi
    from huggingface_hub.utils import filter_repo_objects

    try:
        info = HfApi().model_info(ref.repo, revision=ref.revision, files_metadata=True)
    except Exception as exc:
        raise hub_error(exc, ref.repo, ref.revision) from None
    siblings = info.siblings or []
    patterns = weight_patterns([s.rfilename for s in siblings], allow_pickle)
    files = filter_repo_objects(siblings, allow_patterns=patterns, key=lambda s: s.rfilename)
    return False, sum(s.size or 0 for s in files)


def _cached_folder(ref: CheckpointRef, allow_pickle: bool) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(ref.repo, revision=ref.revision, local_files_only=True,
                                      allow_patterns=allow_patterns(allow_pickle)))
    except Exception:
        return None


def forget(folder: str | Path) -> int:
    """Delete the cached revision whose snapshot folder is ``folder`` (from ``resolve``): its snapshot,
    its refs and the blobs no other cached revision uses, through huggingface_hub's ``scan_cache_dir``.
    Other revisions are never touched. Returns the bytes freed (0 when it is not in the cache)."""
    from huggingface_hub import scan_cache_dir

    folder = Path(folder)
    cache = scan_cache_dir(folder.parent.parent.parent)
    commits = [rev.commit_hash for repo in cache.repos for rev in repo.revisions
               if Path(rev.snapshot_path) == folder]
    if not commits:
        return 0
    strategy = cache.delete_revisions(*commits)
    strategy.execute()
    return int(strategy.expected_freed_size)
