"""The unit of losses and QiD in every figure and in the report (issue 17): a store or data set scored
in bits per byte is labelled bits/byte throughout, one in nats per token (or naming no unit) as before;
Fig. 1's uniform-guess loss ln(V), in nats per token, is left out with a note rather than compared with
bits per byte. And a study's ``where`` (a data set's ``primary.where``): the laws and the paper's
figures see the rows it keeps, the figures of runs, cooldowns and averages every row.

Synthetic studies (tests/show_fixtures.py: the same QiD numbers, scored "in" either unit); figures are
plain matplotlib Figures rendered with Agg. N non-embedding parameters, D tokens."""

from __future__ import annotations

import json

import pytest
import show_fixtures as sf

from qidlab.show.figures import list_figures, make_figure
from qidlab.show.report import render
from qidlab.show.study import ShowOptions, Study, load_study
from qidlab.show.style import FigureUnavailable

#: Figures whose axes carry no loss: ratios, exponents, weight changes, training logs (the
#: trainer's own loss, nats per token whatever the eval unit).
UNITLESS = {"residuals", "exponent-ci", "holdout", "fig12", "fig14"}
#: What the synthetic store draws (fig12/fig14 from its suite folder, the schedule figures need
#: the trajectory columns it lacks).
DRAWN = {"fig1", "fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "fig8", "fig9", "fig10", "fig11"}


def _store_study(tmp_path_factory, unit):
    root = tmp_path_factory.mktemp(unit or "none")
    suite = sf.write_suite(root, weights=False)
    db = sf.write_store(root / "study.db", suite, unit=unit)
    return load_study(db, options=ShowOptions(bootstrap=0, dpi=30))


@pytest.fixture(scope="module")
def bpb(tmp_path_factory):
    return _store_study(tmp_path_factory, "bits_per_byte")


@pytest.fixture(scope="module")
def nats(tmp_path_factory):
    return _store_study(tmp_path_factory, None)


def _labels(fig) -> list[str]:
    """Every axis label (colour bars included) and title of ``fig``."""
    out = [fig.get_suptitle()]
    for ax in fig.axes:
        out += [ax.get_xlabel(), ax.get_ylabel(), ax.get_title()]
    return [t for t in out if t]


def _figures(study) -> dict[str, list[str]]:
    drawn = {}
    for spec in list_figures():
        try:
            drawn[spec.name] = _labels(make_figure(spec.name, study))
        except FigureUnavailable:
            continue
    return drawn


@pytest.mark.parametrize("which, unit, other", [("bpb", "bits/byte", "nats/token"), ("nats", "nats/token", "bits/byte")])
def test_every_figure_labels_losses_in_the_studys_unit(which, unit, other, request):
    study = request.getfixturevalue(which)
    assert study.unit_text == unit
    drawn = _figures(study)
    assert DRAWN <= set(drawn)
    for name, labels in drawn.items():
        loss_axes = [t for t in labels if t.startswith(("QiD", "loss", "16-bit loss", "predicted QiD", "measured QiD",
                                                         "mean measured QiD"))]
        if name not in UNITLESS:
            assert loss_axes, name  # each of these draws a loss or QiD axis
            assert all(f"[{unit}]" in t for t in loss_axes), (name, loss_axes)
            assert not any(other in t for t in labels), (name, labels)
    assert f"predicted QiD, fitted ouyang2024 [{unit}]" in drawn["fig10"]
    assert f"mean measured QiD [{unit}]" in drawn["fig11"]  # the colour bar


def test_fig1_leaves_out_the_uniform_guess_loss_for_bits_per_byte(bpb, nats):
    def fills(fig):
        return [c for ax in fig.axes for c in ax.collections if c.get_label() == "worse than random"]

    assert fills(make_figure("fig1", nats)) and not fills(fig := make_figure("fig1", bpb))
    title = fig.get_suptitle().replace("\n", " ")
    assert "No worse-than-random area: the losses are in bits per byte" in title and "Grey" not in title


def test_the_report_says_the_unit_and_mixes_none(bpb, nats):
    files = render(bpb)
    page, doc = files["report.html"], json.loads(files["report.json"])
    assert "losses and QiD in bits per byte" in page and "nats/token" not in page
    assert "each QiD (bits per byte)" in page and "compare the fitted exponents, not the cells" in page
    assert "Not computed: the losses are in bits per byte" in page and doc["fig1"]["crossings"] == []
    assert "exponents compare, constants and loss levels do not" in page
    plain = render(nats)["report.html"]
    assert "losses and QiD in nats per token" in plain and "worse than random from D" in plain
    assert "bits per byte" not in plain and "exponents compare" not in plain


def test_a_data_sets_unit_comes_from_its_configs(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    sf.trajectory_frame(cosine=False).drop(columns=["unit"]).to_parquet(folder / "measurements.parquet")
    manifest = {"format": "qidlab-dataset/1", "name": "set", "files": {"measurements": {"path": "measurements.parquet"}},
                "configs": [{"config": {"scoring": {"unit": "bits_per_byte"}}}]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert load_study(str(folder), options=ShowOptions(bootstrap=0)).unit == "bits_per_byte"
    (folder / "manifest.json").write_text(json.dumps({**manifest, "configs": [{"config": {}}]}))
    assert load_study(str(folder), options=ShowOptions(bootstrap=0)).unit == "nats_per_token"


def test_the_shipped_data_sets_units():
    assert load_study("qidlab-gpu-2026", options=ShowOptions(bootstrap=0)).unit_text == "nats/token"
    study = load_study("qidlab-gpu-2027", options=ShowOptions(bootstrap=0))
    assert study.unit_text == "bits/byte" and study.where == ("kind=run", "lr_factor=1", "seed=0", "step>=128")
    assert set(study.frame.kind) == {"run"} and set(study.frame.lr_factor) == {1.0} and study.frame.step.min() == 128
    assert set(study.frame.batch_order) == {"contiguous"} and set(study.all_rows.batch_order) == {"contiguous", "shuffled"}
    assert {"branch", "average"} <= set(study.all_rows.kind) and set(study.all_rows.lr_factor) == {0.5, 1.0, 2.0}


# ---------------------------------------------------------------------------
# where: the rows of the laws


WHERE = ("kind=run", "lr_factor=1")


@pytest.fixture(scope="module")
def chosen():
    return Study.from_frame(sf.trajectory_frame(), options=ShowOptions(bootstrap=0, dpi=30, where=WHERE))


def test_the_laws_see_only_the_rows_where_keeps(chosen):
    assert chosen.where == WHERE and set(chosen.frame.kind) == {"run"} and set(chosen.frame.arm) == {"a", "b"}
    fit = chosen.fit("ouyang2024")
    assert len(fit.data) == len(chosen.primary) == len(sf.RUN_STEPS) * 2 * 3  # steps x sizes x bit widths
    everything = Study.from_frame(sf.trajectory_frame(), options=ShowOptions(bootstrap=0))
    assert len(everything.fit("ouyang2024").data) > len(fit.data)


def test_the_schedule_figures_still_draw_every_row(chosen):
    fig = make_figure("peak-lr", chosen)
    assert len([ln for ln in fig.axes[0].get_lines() if ln.get_gid() == "run"]) == 3  # b at 0.5x, 1x, 2x
    ends = [ln for ax in make_figure("cooldown", chosen).axes for ln in ax.get_lines() if ln.get_gid() == "branch-end"]
    assert sum(len(ln.get_xdata()) for ln in ends) == 2 * len(sf.BRANCH_FROM)
    make_figure("averaging", chosen)


def test_the_report_says_which_rows_the_laws_were_fitted_to(chosen):
    page = render(chosen)["report.html"]
    assert "Rows: only those with kind=run and lr_factor=1" in page
    left = len(chosen.all_rows) - len(chosen.frame)
    assert f"{left} rows of the suite are left out of them" in page


def test_a_where_that_keeps_nothing_is_one_error():
    from qidlab.errors import QidlabError

    with pytest.raises(QidlabError, match="no rows match"):
        Study.from_frame(sf.trajectory_frame(), options=ShowOptions(where=("kind=soup",)))
    with pytest.raises(QidlabError, match="`where` must be a sequence"):
        Study.from_frame(sf.trajectory_frame(), options=ShowOptions(where="kind=run"))


def test_the_report_command_takes_where_for_the_laws_rows(tmp_path):
    """`qidlab report --where` replaces the data set's primary where: the laws see only its rows."""
    import subprocess
    import sys

    import qidlab.data

    cmd = [sys.executable, "-m", "qidlab", "report", "qidlab-gpu-2027", "--bootstrap", "0", "--json"]
    where = ["kind=run", "lr_factor=1", "step>=1024"]
    run = subprocess.run([*cmd, "--out", str(tmp_path / "r"), "--where", *where], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    store = json.loads(run.stdout)["store"]
    expected = qidlab.data.load("qidlab-gpu-2027", where=["suite=c2-en", *where])
    assert store["rows"] == len(expected) and set(expected.step) == {1024, 1695, 1950}
    bad = subprocess.run([*cmd, "--out", str(tmp_path / "bad"), "--where", "kind=soup"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--where kind=soup" in bad.stderr
    assert not (tmp_path / "bad" / "report.html").exists()
