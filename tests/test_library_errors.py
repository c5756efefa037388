"""Library errors speak the library's terms; the CLI prints its flags for them (issue 19).

A ``QidlabError`` names the parameters its message is about (``params``, written in backticks
in the message as the Python API spells them); ``qidlab`` prints the running subcommand's flag
for each, so its one-line errors read as before."""

from __future__ import annotations

import ast
import pickle
import re
from pathlib import Path

import pandas as pd
import pytest

from qidlab.cli import build_parser, main
from qidlab.cli.args import subcommand_flags, with_flags
from qidlab.corpus.recipes import files_docs
from qidlab.errors import QidlabError
from qidlab.laws import get_law
from qidlab.laws.analysis import critical_tokens, quantized_loss
from qidlab.laws.fit import fit_law, pooled_columns
from qidlab.laws.solve import evaluate, law_params, params_for, solve
from qidlab.show.study import ShowOptions
from qidlab.tables import parse_number, select_rows

SRC = Path(__file__).resolve().parents[1] / "src" / "qidlab"
OUYANG = get_law("ouyang2024").default_constants()
SUN = get_law("sun2025").default_constants()


def raised(call) -> QidlabError:
    with pytest.raises(QidlabError) as err:
        call()
    return err.value


def run_error(capsys, *argv) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    return err.strip().removeprefix("qidlab: error: ")


# ---------------------------------------------------------------------------
# the library: parameters as the Python API spells them


LIBRARY = [
    (lambda t: fit_law(t, "ouyang2024", drop_highest=-1), ("drop_highest", "bootstrap"),
     "`drop_highest` and `bootstrap` must be >= 0"),
    (lambda t: fit_law(t, "ouyang2024", drop_highest=1000), ("drop_highest",), "`drop_highest` 1000 would drop all"),
    (lambda t: fit_law(t, "ouyang2024", bootstrap=5, resample="method"), ("resample",),
     "`resample` needs column(s) method"),
    (lambda t: fit_law(t[t.bits == 3], "ouyang2024", bootstrap=5, resample="bits"), ("resample",),
     "`resample` bits: needs at least 2 groups, found 1"),
    (lambda t: evaluate("ouyang2024", OUYANG, {"n_params": 7e9, "bits": 4}), ("values",),
     "needs a value for tokens (`values` tokens=...)"),
    (lambda t: solve("ouyang2024", OUYANG, {"n_params": 7e9, "bits": 2, "tokens": 1e9}, 0.2, "tokens"),
     ("known", "var"), "tokens is both given (`known`) and solved for (`var`)"),
    (lambda t: law_params("ouyang2024-bits"), ("fit",), "pass the fit file (`fit`)"),
    (lambda t: critical_tokens("sun2025", SUN, {"n_params": 1e9}), ("values",), "(`values` NAME=VALUE)"),
    (lambda t: ShowOptions(bootstrap=-1).check(), ("bootstrap",), "`bootstrap` must be >= 0"),
    (lambda t: ShowOptions(max_tokens=1e3).check(), ("max_tokens",), "`max_tokens` must be above 1e9"),
    (lambda t: ShowOptions(vocab_size=1).check(), ("vocab_size",), "`vocab_size` must be at least 2"),
    (lambda t: select_rows(t, ["bits"]), ("where",), "`where` expects COLUMN=V1,V2 or COLUMN>=X, got 'bits'"),
    (lambda t: select_rows(t, ["bits=17"]), ("where",), "`where` bits=17: no rows match"),
    (lambda t: files_docs([]), ("files",), "needs at least one path (`files` PATH ...)"),
]


@pytest.mark.parametrize("call,params,words", LIBRARY)
def test_a_library_error_names_its_parameters_as_python_spells_them(table1, call, params, words):
    err = raised(lambda: call(table1))
    assert err.params == params
    assert words in str(err) and "--" not in str(err)


def test_a_fit_file_without_a_matching_group_names_values(tmp_path, table1):
    fits = fit_law(table1, "ouyang2024", by="bits", holdout=())
    doc = {"law": "ouyang2024", "fits": [f.to_dict() for f in fits]}
    err = raised(lambda: law_params("ouyang2024", fit=doc, values={"bits": 8.0}))
    assert err.params == ("values",) and "choose one with `values` bits=..." in str(err)


def test_the_error_keeps_its_parameters_across_processes():
    err = pickle.loads(pickle.dumps(QidlabError("`fit` is missing", params=("fit",))))
    assert (str(err), err.params) == ("`fit` is missing", ("fit",))
    assert QidlabError("plain").params == () and isinstance(QidlabError("x"), ValueError)


def _raised_strings(tree) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            out += [c.value for c in ast.walk(node.exc) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
    return out


#: Flags still inside library messages, because existing library-level tests assert them
#: (tests/test_store_merge.py: "--on-conflict skip"; tests/test_show.py: "--only-suite ..." whose
#: sibling message this one is), the report shows the text (the exponent-ci figure), or the code
#: moves elsewhere in this step (the suite folders go to qidlab.checkpoints.suites, where the
#: message becomes "`suites` DIR: no such folder", params=("suites",); the CLI maps it to --suite).
KEPT = {("store/merge.py", "--on-conflict"), ("show/study.py", "--only-suite"), ("show/diagnostics.py", "--bootstrap")}


def test_no_other_library_error_names_a_cli_flag():
    found = set()
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("cli/"):
            continue
        for text in _raised_strings(ast.parse(path.read_text())):
            found |= {(rel, flag) for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", text)}
    assert found <= KEPT, sorted(found - KEPT)


# ---------------------------------------------------------------------------
# the CLI: the same mistakes, the flags that make them


@pytest.mark.parametrize("argv,message", [
    (["fit", "ouyang2024-table1", "--law", "ouyang2024", "--drop-highest", "-1"],
     "--drop-highest and --bootstrap must be >= 0"),
    (["fit", "ouyang2024-table1", "--law", "ouyang2024", "--drop-highest", "1000"],
     "--drop-highest 1000 would drop all 48 points"),
    (["fit", "ouyang2024-table1", "--law", "ouyang2024", "--bootstrap", "5", "--resample", "method"],
     "--resample needs column(s) method"),
    (["fit", "ouyang2024-table1", "--law", "ouyang2024", "--where", "bits"],
     "--where expects COLUMN=V1,V2 or COLUMN>=X, got 'bits'"),
    (["predict", "--law", "ouyang2024", "--set", "n_params=7B", "bits=4"],
     "law 'ouyang2024' needs a value for tokens (--set tokens=...)"),
    (["solve", "--law", "ouyang2024", "--for", "tokens", "--target", "qid=0.2", "--set", "n_params=7e9", "bits=2",
      "tokens=1e9"], "tokens is both given (--set) and solved for (--for)"),
    (["predict", "--law", "ouyang2024-bits", "--set", "bits=4"], "pass the fit file (--fit)"),
    (["critical-tokens", "--law", "sun2025", "--set", "n_params=1e9"], "(--set NAME=VALUE)"),
    (["plot", "fig3", "--out", "x.png", "--bootstrap", "-1"], "--bootstrap must be >= 0"),
    (["plot", "fig3", "--out", "x.png", "--max-tokens", "1e3"], "--max-tokens must be above 1e9"),
    (["report", "--out", "r", "--suite", "/no/such/suite"], "--suite /no/such/suite: no such folder"),
    (["corpus", "build", "files", "--out", "c"], "recipe 'files' needs at least one path (--files PATH ...)"),
])
def test_the_cli_prints_the_flag_for_the_same_mistake(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert message in run_error(capsys, *argv)


def test_flags_come_from_the_subcommand_that_ran():
    parser = build_parser()
    publish = subcommand_flags(parser, parser.parse_args(["store", "publish", "x.db", "--name", "n", "--out", "o"]))
    assert publish["suites"] == "--suite" and publish["doc_losses"] == "--doc-losses"
    plot = subcommand_flags(parser, parser.parse_args(["plot", "fig3", "--out", "x.png"]))
    assert (plot["suite"], plot["suites"], plot["max_tokens"]) == ("--only-suite", "--suite", "--max-tokens")
    train = subcommand_flags(parser, parser.parse_args(["train", "s.toml", "--out", "o"]))
    assert (train["out_dir"], train["lr_sweep"]) == ("--out", "--lr-sweep")
    sweep = subcommand_flags(parser, parser.parse_args(["sweep", "s.toml"]))
    assert sweep["executor"] == "--executor" and "suites" not in sweep


def test_a_parameter_without_a_flag_is_printed_bare():
    err = QidlabError("`out_dir` exists; `lr_sweep` differs; `other` stays", params=("out_dir", "lr_sweep"))
    assert with_flags(err, {"out_dir": "--out"}) == "--out exists; lr_sweep differs; `other` stays"


# ---------------------------------------------------------------------------
# what moved out of the CLI


def test_select_rows_and_numbers_with_size_suffixes(table1):
    assert parse_number(" 1.5M") == 1.5e6 and parse_number("7B") == 7e9 and parse_number("2") == 2.0
    assert str(raised(lambda: parse_number("abc"))) == "'abc' is not a number"
    rows = select_rows(table1, ["bits=2,3", "n_params>=7B"])
    assert set(rows.bits) == {2.0, 3.0} and rows.n_params.min() >= 7e9
    assert select_rows(table1, []) is table1


def test_pooled_columns_name_what_one_fit_would_pool():
    frame = pd.DataFrame({"suite": ["a", "b", "b"], "method": ["gptq"] * 3, "eval_set": ["x", "y", "z"]})
    assert pooled_columns(frame) == {"suite": 2, "eval_set": 3}
    assert pooled_columns(frame, by=["suite"]) == {"eval_set": 3}


def test_quantized_loss_beside_a_qid_prediction():
    kaplan = get_law("kaplan")
    values = {"n_params": 7e9, "tokens": 1e12, "bits": 4}
    loss16 = float(evaluate(kaplan, kaplan.default_constants(), {"n_params": 7e9, "tokens": 1e12})[0])
    assert quantized_loss("ouyang2024", 0.1, values) == {
        "loss16": loss16, "loss": loss16 + 0.1, "loss16_source": "kaplan law, Ouyang 2024 Fig. 7 constants"}
    assert quantized_loss("ouyang2024", 0.1, {**values, "loss16": 2.0})["loss"] == 2.1
    assert quantized_loss("ouyang2024", 0.1, {"n_params": 7e9, "bits": 4}) == {}
    assert quantized_loss("chinchilla", 2.0, values) == {}


def test_params_for_serves_each_row_its_fitted_group(table1):
    fits = fit_law(table1, "ouyang2024", by="bits", holdout=())
    pick = params_for("ouyang2024", fit={"law": "ouyang2024", "fits": [f.to_dict() for f in fits]})
    for f in fits:
        assert pick({"n_params": 7e9, **f.group}) == pytest.approx(f.all_params())
    assert params_for("ouyang2024")({"bits": 3}) == OUYANG


def test_a_law_knows_its_named_values_and_its_document():
    frantar = get_law("frantar2025")
    assert frantar.variable("eff").named["w4a4"] == 0.747 and get_law("ouyang2024").variable("bits").named == {}
    doc = get_law("ouyang2024").to_dict()
    assert doc["name"] == "ouyang2024" and doc["fit_method"] == "lstsq (exact, log space)"
    assert [v["name"] for v in doc["variables"]] == ["n_params", "tokens", "bits"]
