"""The command line explains itself (issue 18, newcomer items): every command and action has a
description, every option its help, every leaf command a --json; numbers echo the user's units."""

import argparse
import json

import pytest

from qidlab.cli import build_parser, main
from qidlab.output import count, size
from qidlab.tables import parse_number


def _commands(parser, name="qidlab"):
    """(name, parser) of every subcommand page, leaves and groups."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for sub_name, sub in action.choices.items():
                yield f"{name} {sub_name}", sub, helps.get(sub_name)
                yield from _commands(sub, f"{name} {sub_name}")


COMMANDS = list(_commands(build_parser()))


def test_the_walk_finds_every_command():
    names = {name for name, _, _ in COMMANDS}
    assert {"qidlab fit", "qidlab export", "qidlab store publish", "qidlab corpus build", "qidlab demo"} <= names
    assert len(names) >= 20


@pytest.mark.parametrize("name, parser, help_line", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_every_command_and_option_has_help(name, parser, help_line):
    assert help_line, f"{name}: no help line in `qidlab --help`"
    assert parser.description, f"{name}: no description on its --help page"
    undocumented = [a.option_strings or [a.dest] for a in parser._actions
                    if not a.help and not isinstance(a, argparse._HelpAction)]
    assert not undocumented, f"{name}: options without help: {undocumented}"
    leaf = not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
    if leaf:
        assert any("--json" in a.option_strings for a in parser._actions), f"{name}: no --json"


def test_export_json(tmp_path, capsys):
    """`export --json`: the rows as JSON without --out; what was written with it."""
    from qidlab.store import Store

    db = tmp_path / "empty.db"
    Store(db).close()
    assert main(["export", str(db), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rows"] == [] and doc["store"] == str(db)
    assert main(["export", str(db), "--out", str(tmp_path / "x.csv"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rows"] == 0 and doc["format"] == "csv" and (tmp_path / "x.csv").is_file()
    assert main(["export", str(db), "--out", str(tmp_path / "x.csv")]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'x.csv'}: 0 measurements (csv)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db", "x.csv"]  # no -wal, -shm


@pytest.mark.parametrize("text", ["7B", "405B", "1.5T", "100T", "20M", "3K", "512"])
def test_sizes_echo_the_users_units(text):
    assert size(parse_number(text)) == text


def test_counts_take_their_number():
    assert (count(1, "point"), count(2, "point"), count(0, "point")) == ("1 point", "2 points", "0 points")


def test_table1_and_project_print_sizes_as_given(capsys):
    assert main(["table1", "--law", "ouyang2024", "--sizes", "7B,70B", "--bits", "4", "--qid", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "7B" in out and "70B" in out and "e+09" not in out
    assert main(["project", "--law", "ouyang2024", "--sizes", "7B", "--bits", "4"]) == 0
    out = capsys.readouterr().out
    assert "at 100T tokens" in out and "N=7B P=4" in out


def test_fit_without_input_fits_the_primary_slice_and_names_it(capsys):
    """Like plot and report: the shipped data set's primary slice, named on stderr."""
    import qidlab.data

    primary = qidlab.data.manifest(qidlab.data.DEFAULT)["primary"]
    capsys.readouterr()
    assert main(["fit", "--law", "ouyang2024", "--holdout", "", "--json"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    conditions = [f"{k}={v}" for k, v in sorted(primary.items()) if k != "where"] + list(primary.get("where", []))
    assert doc["data"]["primary"] == conditions
    table = qidlab.data.load(qidlab.data.DEFAULT)
    chosen = qidlab.data.load(qidlab.data.DEFAULT, where=conditions)
    assert doc["data"]["rows"] == len(chosen) < len(table)
    assert f"read the shipped data set {qidlab.data.DEFAULT}" in captured.err and "primary slice" in captured.err
    # a column the user chose is left to the user
    assert main(["fit", "--law", "ouyang2024", "--holdout", "", "--json", "--where", "method=rtn"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "method=rtn" in doc["data"]["where"] and not any(w.startswith("method=") for w in doc["data"]["primary"])


def test_a_fit_with_too_few_points_or_an_estimate_outside_its_ci_is_flagged():
    from qidlab.output import fit_cautions

    params = {"k": 1.0, "alpha": 0.2, "beta": 0.5, "gamma": None}
    (few,) = fit_cautions(4, params, None)
    assert few.startswith("warning: 4 points for 3 free parameters")
    assert fit_cautions(5, params, {"alpha": [0.1, 0.3]}) == []
    (outside,) = fit_cautions(5, params, {"alpha": [0.1, 0.3], "beta": [0.51, 0.6]})
    assert "the estimate of beta lies outside its bootstrap CI" in outside
    assert fit_cautions(5, params, {"beta": [0.5 + 1e-12, 0.5 + 1e-12]}) == []  # a CI of one value
    (both,) = fit_cautions(5, params, {"alpha": [0.3, 0.4], "beta": [0.51, 0.6]})
    assert "the estimates of alpha, beta lie outside their bootstrap CI" in both
