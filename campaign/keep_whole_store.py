"""Keep a GPU call's whole store (per-document losses) on the whole-stores branch (issue 17).

    PYTHONPATH=src .venv/bin/python campaign/keep_whole_store.py FILES_AT NAME RESULTS \\
        --what "session 5, campaign2-cos-s3b.plan: cosine runs of 1950/975/488 updates for h1024-l6"

FILES_AT is the folder a `run` call's files came back to (``store.db.gz.part-NN`` from
``campaign/job.sh``); NAME the file on the branch (``c2-s5-call1-cos-whole.db.gz``); RESULTS the
session's ``campaign/results/<date>-c2-sN/`` folder. In order, stopping at the first problem with
one line and exit 2 (nothing written before a check passes):

1. the parts joined and checked as gzip;
2. ``qidlab store recheck`` on the unzipped store: every QiD and CI recomputed from the
   per-document losses must equal the stored ones (``--no-recheck`` skips it, e.g. for a store
   already rechecked);
3. a commit on the branch (default ``campaign2-stores``) whose tree is the branch's plus the file,
   ``SHA256SUMS`` with its line and ``README.md`` with a table row (NAME | what | measurements),
   made with git plumbing (``hash-object``, ``mktree``, ``commit-tree``, ``update-ref``): the
   working tree and the checked-out branch are not touched;
4. ``RESULTS/whole-stores.sha256`` gets the file's line (the data set manifest's ``whole_stores``
   and the branch's ``SHA256SUMS`` must agree: ``campaign/c2_dataset.py`` checks).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from qidlab.errors import QidlabError  # noqa: E402
from qidlab.sweep.recheck import TOLERANCE, recheck  # noqa: E402

BRANCH = "campaign2-stores"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files_at", help="the folder holding store.db.gz.part-NN")
    parser.add_argument("name", help="the file's name on the branch (ends in .db.gz)")
    parser.add_argument("results", help="the session's campaign/results/<date>-c2-sN/ folder")
    parser.add_argument("--what", required=True, help="the README row's description")
    parser.add_argument("--branch", default=BRANCH, help="the whole-stores branch (default: %(default)s)")
    parser.add_argument("--repo", default=str(ROOT), help="the git repository (default: this one)")
    parser.add_argument("--no-recheck", action="store_true", help="skip the recheck (step 2)")
    args = parser.parse_args(argv)
    try:
        line = keep(Path(args.files_at), args.name, Path(args.results), args.what, args.branch, Path(args.repo),
                    not args.no_recheck)
    except QidlabError as exc:
        print(f"keep_whole_store: error: {exc}", file=sys.stderr)
        return 2
    print(line)
    return 0


def keep(files_at: Path, name: str, results: Path, what: str, branch: str, repo: Path, check: bool = True) -> str:
    """Steps 1-4 of the module docstring; returns a one-line summary."""
    if not name.endswith(".db.gz") or "/" in name:
        raise QidlabError(f"{name!r}: the name must be a file name ending in .db.gz")
    if not results.is_dir():
        raise QidlabError(f"{results}: no such results folder")
    sums = {n: d for d, n in (ln.split() for ln in _git(repo, "show", f"{branch}:SHA256SUMS").splitlines() if ln.strip())}
    if name in sums:
        raise QidlabError(f"{name} is already on branch {branch}")
    with tempfile.TemporaryDirectory(prefix="keep-store-") as tmp:
        joined, db = _join(files_at, Path(tmp) / name, Path(tmp) / "store.db")
        measurements, summary = _recheck(db, name, check)
        digest = hashlib.sha256(joined.read_bytes()).hexdigest()
        blob = _git(repo, "hash-object", "-w", str(joined)).strip()
    entry = f"{digest}  {name}\n"
    commit = _commit(repo, branch, name, blob, entry, f"| {name} | {what} | {measurements:,} |")
    with open(results / "whole-stores.sha256", "a") as f:
        f.write(entry)
    return f"{name}: {measurements:,} measurements, {summary}; sha256 {digest[:12]} in {results}/whole-stores.sha256; " \
           f"branch {branch} at {commit[:12]}"


def _join(files_at: Path, out: Path, db: Path) -> tuple[Path, Path]:
    """The parts joined into ``out`` and unzipped into ``db`` (which checks them as one gzip file)."""
    parts = sorted(files_at.glob("store.db.gz.part-*"))
    if not parts:
        raise QidlabError(f"{files_at}: no store.db.gz.part-* (did the call return its whole store?)")
    with open(out, "wb") as f:
        for part in parts:
            f.write(part.read_bytes())
    try:
        with gzip.open(out) as g, open(db, "wb") as f:
            shutil.copyfileobj(g, f)
    except (OSError, EOFError) as exc:
        raise QidlabError(f"{files_at}: the joined parts are not a whole gzip file ({exc})") from exc
    return out, db


def _recheck(db: Path, name: str, check: bool) -> tuple[int, str]:
    """The store's measurement count and, with ``check``, every QiD and CI recomputed (``recheck``)."""
    con = sqlite3.connect(db)
    try:
        measurements = con.execute("SELECT count(*) FROM measurements").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise QidlabError(f"{name}: not a qidlab store ({exc})") from exc
    finally:
        con.close()
    if not check:
        return measurements, "not rechecked"
    rows = recheck(db)
    bad = [r["id"] for r in rows if "error" in r or r["diff"] > TOLERANCE]
    if bad:
        raise QidlabError(f"{name}: {len(bad)} of {len(rows)} QiD or CIs differ from their recomputation "
                          f"(first: measurement {bad[0]}); not kept")
    return measurements, f"rechecked {len(rows):,} (largest difference {max(r['diff'] for r in rows):.1e})"


def _commit(repo: Path, branch: str, name: str, blob: str, entry: str, row: str) -> str:
    tree = [line.split("\t") for line in _git(repo, "ls-tree", branch).splitlines()]
    entries = {path: meta for meta, path in tree}
    readme = _git(repo, "show", f"{branch}:README.md")
    lines = readme.splitlines()
    last = max((i for i, ln in enumerate(lines) if ln.startswith("| ")), default=None)
    if last is None:
        raise QidlabError(f"{branch}:README.md has no table to add a row to")
    readme = "\n".join([*lines[:last + 1], row, *lines[last + 1:]]) + "\n"
    sums = _git(repo, "show", f"{branch}:SHA256SUMS") + entry
    entries["README.md"] = f"100644 blob {_blob(repo, readme)}"
    entries["SHA256SUMS"] = f"100644 blob {_blob(repo, sums)}"
    entries[name] = f"100644 blob {blob}"
    tree_id = _git(repo, "mktree", stdin="".join(f"{meta}\t{path}\n" for path, meta in sorted(entries.items()))).strip()
    commit = _git(repo, "commit-tree", tree_id, "-p", branch, "-m", f"whole store {name}: {row}").strip()
    _git(repo, "update-ref", f"refs/heads/{branch}", commit)
    return commit


def _blob(repo: Path, text: str) -> str:
    return _git(repo, "hash-object", "-w", "--stdin", stdin=text).strip()


def _git(repo: Path, *args: str, stdin: str | None = None) -> str:
    run = subprocess.run(["git", *args], cwd=repo, input=stdin, capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise QidlabError(f"git {' '.join(args[:2])}: {run.stderr.strip().splitlines()[-1] if run.stderr.strip() else 'failed'}")
    return run.stdout


if __name__ == "__main__":
    sys.exit(main())
