"""Plug-in quantizers: ``register_method`` and the ``qidlab.methods`` entry points.

The toy method lives in a separately installed distribution (a real ``*.dist-info`` with
``METADATA`` and ``entry_points.txt`` in a folder put on PYTHONPATH), found by
importlib.metadata's own entry-point lookup, and runs through ``qidlab sweep`` and
``qidlab quantize`` in subprocesses that know nothing else of it."""

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
from tiny_models import make_tiny_checkpoint, write_study_texts

from qidlab.errors import QidlabError
from qidlab.quantize import QuantConfig, RTNConfig, config
from qidlab.quantize import config_from_dict, get_method, register_method

SRC = Path(__file__).resolve().parents[1] / "src"

TOY = '''
"""qidlab-toy: per-tensor absmax rounding that insists on calibration ids (a test plug-in)."""
from dataclasses import dataclass
from typing import ClassVar

import torch

from qidlab.quantize import QuantConfig, select_linears

CALLS = []


@dataclass(frozen=True)
class ToyConfig(QuantConfig):
    method: ClassVar[str] = "toy"
    needs_calibration: ClassVar[bool] = True
    bits: int
    shrink: float = 1.0

    def _validate(self):
        if not isinstance(self.bits, int) or not 2 <= self.bits <= 8:
            raise ValueError(f"bits must be 2..8, got {self.bits!r}")


@torch.no_grad()
def quantize(model, config, calibration, report, **_):
    assert isinstance(calibration, torch.Tensor) and calibration.dtype == torch.long, calibration
    report.n_calibration_tokens = int(calibration.numel())
    levels = 2 ** (config.bits - 1) - 1
    for name, mod in select_linears(model, config.modules).items():
        w = mod.weight
        step = w.abs().max() * config.shrink / levels
        report.replace(name, mod, (w / step).round().clamp(-levels, levels) * step)


METHOD = (ToyConfig, quantize)
'''

STUDY = """
[study]
name = "plug"
store = "plug.db"
device = "cpu"

[checkpoints]
root = "{root}"

[[eval_sets]]
name = "heldout"
source = "{eval}"
n_docs = 8

[calibration]
source = "{train}"
n_samples = 2
seq_len = 32

[[methods]]
method = "toy"
bits = [2, 6]

[[methods]]
method = "rtn"
bits = 2
group_size = 32

[scoring]
bootstrap = 50
"""


def _dist(where: Path, name: str, entry_points: str, modules: dict[str, str]) -> Path:
    """A distribution as an installer leaves it: modules and ``<name>-0.1.dist-info``."""
    where.mkdir(parents=True, exist_ok=True)
    for mod, text in modules.items():
        (where / f"{mod}.py").write_text(text)
    info = where / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    (info / "RECORD").write_text("")
    return where


@pytest.fixture
def registry(monkeypatch):
    """The method registry as it was, restored after the test (plug-ins registered in-process go)."""
    monkeypatch.setattr(config, "_REGISTRY", dict(config._REGISTRY))
    monkeypatch.setattr(config, "_ENTRY_POINTS_LOADED", set())
    return config


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("plug")
    make_tiny_checkpoint(root / "suite", steps=80, save_steps=[80], model_name="m")
    write_study_texts(root, 40, 20)
    _dist(root / "site", "qidlab-toy", "[qidlab.methods]\ntoy = qidlab_toy:METHOD\n", {"qidlab_toy": TOY})
    return root


def _run(args, site: Path, cwd: Path):
    env = dict(os.environ, PYTHONPATH=f"{SRC}{os.pathsep}{site}", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "qidlab", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_a_plugin_method_from_another_package_runs_through_sweep(study_dir, tmp_path):
    from qidlab.store import read_canonical

    study = tmp_path / "study.toml"
    study.write_text(STUDY.format(root=study_dir / "suite", eval=study_dir / "eval.txt", train=study_dir / "train.txt"))
    done = _run(["sweep", str(study), "--quiet", "--json"], study_dir / "site", tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["measured"] == 4  # 16-bit, toy 2 and 6 bits, rtn 2 bits
    table = read_canonical(tmp_path / "plug.db")
    toy = table[table.method == "toy"].set_index("bits")
    assert sorted(toy.index) == [2.0, 6.0]
    assert toy.qid[2.0] > toy.qid[6.0] and toy.qid[2.0] > 0.05  # 3 levels per tensor ruin a trained model
    assert (toy.loss16 == table[table.method == "rtn"].loss16.iloc[0]).all()  # one 16-bit reference
    from qidlab.store import Store

    with Store(tmp_path / "plug.db") as store:
        rows = store.conn.execute("SELECT config_json FROM measurements WHERE method = 'toy'").fetchall()
    configs = [json.loads(r[0]) for r in rows]
    assert {c["quantization"]["bits"] for c in configs} == {2, 6}
    assert all(c["quantization"]["shrink"] == 1.0 and c["calibration"]["n_samples"] == 2 for c in configs)
    # the report draws the plug-in's slice like a built-in's
    rep = _run(["report", str(tmp_path / "plug.db"), "--out", str(tmp_path / "rep"), "--method", "toy",
                "--bootstrap", "0"], study_dir / "site", tmp_path)
    assert rep.returncode == 0, rep.stderr
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["method"] == "toy"
    # the identity is stable: the same study again measures nothing
    again = _run(["sweep", str(study), "--quiet", "--json"], study_dir / "site", tmp_path)
    assert again.returncode == 0 and json.loads(again.stdout)["measured"] == 0, again.stderr
    # without the package the study names an unknown method: one line, nothing measured
    env = dict(os.environ, PYTHONPATH=str(SRC))
    gone = subprocess.run([sys.executable, "-m", "qidlab", "sweep", str(study), "--dry-run"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert gone.returncode == 2 and "unknown quantization method 'toy'" in gone.stderr
    assert len(gone.stderr.strip().splitlines()) == 1


def test_qidlab_quantize_takes_a_plugin_method(study_dir, tmp_path):
    out = tmp_path / "q"
    done = _run(["quantize", str(study_dir / "suite" / "m" / "step80"), "--method", "toy", "--bits", "3",
                 "--set", "shrink=0.5", "--calibration", str(study_dir / "train.txt"), "--n-samples", "2",
                 "--seq-len", "16", "--out", str(out), "--json"], study_dir / "site", tmp_path)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["config"] == {"method": "toy", "bits": 3, "shrink": 0.5, "modules": None}
    assert doc["n_calibration_tokens"] == 32 and len(doc["modules"]) == 8
    assert (out / "model.safetensors").exists() and not (out / "quantized-codes.safetensors").exists()
    needs = _run(["quantize", str(study_dir / "suite" / "m" / "step80"), "--method", "toy", "--bits", "3",
                  "--out", str(tmp_path / "r")], study_dir / "site", tmp_path)
    assert needs.returncode == 2 and "needs --calibration" in needs.stderr and not (tmp_path / "r").exists()


# ---- in-process: the registry's rules --------------------------------------------------------


@dataclass(frozen=True)
class Halve(QuantConfig):
    method: ClassVar[str] = "halve"
    bits: int = 1


def _halve(model, cfg, calibration, report, **_):
    import torch

    from qidlab.quantize import select_linears

    with torch.no_grad():
        for name, mod in select_linears(model, cfg.modules).items():
            report.replace(name, mod, mod.weight / 2)


def test_register_method_in_process_reaches_quantize_and_the_identity(registry, tmp_path):
    import torch

    from qidlab.quantize import quantize_
    from qidlab.store import config_hash

    register_method("halve", Halve, _halve)
    register_method("halve", Halve, _halve)  # the same pair again: nothing happens
    cfg = config_from_dict({"method": "halve", "bits": 1})
    assert cfg == Halve() and cfg.columns() == {"method": "halve", "bits": 1.0, "group_size": None}
    assert config_hash({"quantization": cfg.to_dict()}) != config_hash({"quantization": Halve(bits=2).to_dict()})
    model = torch.nn.ModuleDict({"blocks": torch.nn.ModuleList([torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)])})
    before = [m.weight.detach().clone() for m in model["blocks"]]
    report = quantize_(model, Halve(modules=("blocks.1",)))
    assert [m.name for m in report.modules] == ["blocks.1"] and report.modules[0].rel_error == pytest.approx(0.5)
    torch.testing.assert_close(model["blocks"][1].weight, before[1] / 2)
    assert torch.equal(model["blocks"][0].weight, before[0])
    with pytest.raises(QidlabError, match="registered with Halve, not Impostor"):
        quantize_(model, Impostor())


@dataclass(frozen=True)
class Impostor(QuantConfig):
    method: ClassVar[str] = "halve"
    bits: int = 1


@pytest.mark.parametrize("cls, fn, message", [
    (RTNConfig, _halve, "'rtn' is a built-in method"),
    (dict, _halve, "must be a dataclass deriving from qidlab.quantize.QuantConfig"),
    (Halve, "not a function", "'module:function' reference"),
])
def test_bad_registrations_are_one_line(registry, cls, fn, message):
    name = "rtn" if cls is RTNConfig else "halve"
    with pytest.raises(QidlabError, match=message) as err:
        register_method(name, cls, fn)
    assert "\n" not in str(err.value)


def test_a_config_class_lacking_what_is_needed(registry):
    @dataclass(frozen=True)
    class NoBits(QuantConfig):
        method: ClassVar[str] = "nobits"
        scale: float = 1.0

    @dataclass(frozen=True)
    class Misnamed(QuantConfig):
        method: ClassVar[str] = "other"
        bits: int = 4

    @dataclass(frozen=True)
    class Trains(QuantConfig):
        method: ClassVar[str] = "trains"
        supports_qat: ClassVar[bool] = True
        bits: int = 4

    for name, cls, message in (("nobits", NoBits, "needs a 'bits' field or a w_bits property"),
                               ("misnamed", Misnamed, "method is 'other'; set method"),
                               ("trains", Trains, "may not declare supports_qat")):
        with pytest.raises(QidlabError, match=message):
            register_method(name, cls, _halve)
        with pytest.raises(QidlabError, match="unknown quantization method"):
            get_method(name)  # nothing half-registered


def test_entry_points_load_lazily_and_fail_in_one_line(registry, tmp_path, monkeypatch):
    site = _dist(tmp_path / "site", "qidlab-plugs",
                 "[qidlab.methods]\nbroken = qidlab_broken:METHOD\nnotpair = qidlab_notpair:METHOD\n"
                 "rtn = qidlab_notpair:CLASH\n",
                 {"qidlab_broken": "import qidlab_no_such_module\n",
                  "qidlab_notpair": "from qidlab.quantize import RTNConfig\nMETHOD = 42\n"
                                    "CLASH = (RTNConfig, 'qidlab_notpair:f')\n"})
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(QidlabError, match=r"'broken': entry point broken = qidlab_broken:METHOD of qidlab-plugs "
                                          r"failed to import \(ModuleNotFoundError") as err:
        config_from_dict({"method": "broken", "bits": 4})
    assert "\n" not in str(err.value)
    with pytest.raises(QidlabError, match="failed to import"):  # the same line again, not "unknown"
        get_method("broken")
    with pytest.raises(QidlabError, match="names int, not a \\(ConfigClass, fn\\) pair"):
        get_method("notpair")
    assert get_method("rtn").origin == "qidlab"  # a built-in name is never looked up among plug-ins
    assert "toy" not in config.registered_methods()  # nothing loaded that was not asked for


def test_a_plugin_that_needs_calibration_gets_it_in_the_study(registry, study_dir, tmp_path, monkeypatch):
    """Validation and identity in-process: the study file names the entry-point method."""
    from qidlab.sweep import load_study
    from qidlab.sweep.run import measurement_config

    monkeypatch.syspath_prepend(str(study_dir / "site"))
    study = tmp_path / "study.toml"
    study.write_text(STUDY.format(root=study_dir / "suite", eval=study_dir / "eval.txt", train=study_dir / "train.txt"))
    loaded = load_study(study)
    toy = [c for c in loaded.methods if c.method == "toy"]
    assert [c.bits for c in toy] == [2, 6] and type(toy[0]).needs_calibration
    assert "calibration" in measurement_config(toy[0], loaded)
    study.write_text(study.read_text().replace("bits = [2, 6]", "bits = [2, 6]\nshrnk = 0.5"))
    with pytest.raises(QidlabError, match=r"methods\[0\]: unknown field\(s\) shrnk for method 'toy'"):
        load_study(study)
    study.write_text(study.read_text().replace('method = "toy"', 'method = "tyo"'))
    with pytest.raises(QidlabError, match="unknown quantization method 'tyo'"):
        load_study(study)


def test_a_worker_finds_a_method_registered_where_its_config_class_lives(tmp_path):
    """What a Ray or Slurm worker does: unpickle the config (importing its module, which registers)."""
    (tmp_path / "qidlab_selfreg.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass
        from typing import ClassVar
        from qidlab.quantize import QuantConfig, register_method

        @dataclass(frozen=True)
        class SelfConfig(QuantConfig):
            method: ClassVar[str] = "selfreg"
            bits: int = 3

        register_method("selfreg", SelfConfig, "qidlab_selfreg:quantize")
        '''))
    env = dict(os.environ, PYTHONPATH=f"{SRC}{os.pathsep}{tmp_path}")
    made = subprocess.run([sys.executable, "-c", "import pickle, sys, qidlab_selfreg; "
                           "sys.stdout.buffer.write(pickle.dumps(qidlab_selfreg.SelfConfig(bits=5)))"],
                          env=env, capture_output=True, timeout=120, check=True).stdout
    worker = subprocess.run([sys.executable, "-c", "import pickle, sys; from qidlab.quantize import get_method; "
                             "cfg = pickle.loads(sys.stdin.buffer.read()); m = get_method(cfg.method); "
                             "print(cfg.bits, m.config_class is type(cfg), m.fn)"],
                            env=env, input=made, capture_output=True, timeout=120)
    assert worker.returncode == 0, worker.stderr
    assert worker.stdout.decode().split() == ["5", "True", "qidlab_selfreg:quantize"]
