"""The figures of where a checkpoint sits in its training (qidlab.show.schedules): cooldown,
peak-lr and averaging, drawn from a synthetic frame with the trajectory columns of
qidlab.train.trajectories (two sizes, cooldown branches, LAWA averages, a size at three peak lrs,
a cosine suite), and skipped with their reason on measurements without those columns.

Figures are plain matplotlib Figures (no pyplot), rendered with Agg. Units: N non-embedding
parameters, D tokens, QiD in the frame's unit (here bits per byte)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from show_fixtures import BRANCH_FROM, RUN_STEPS, seeded_trajectory_frame, trajectory_frame
from show_fixtures import TOKENS_PER_STEP_RUNS as TOKENS_PER_STEP
from show_fixtures import TRAJECTORY_SIZES as SIZES
from show_fixtures import trajectory_qid as _qid

from qidlab.show.figures import FIGURES, make_figure
from qidlab.show.report import render
from qidlab.show.schedules import branch_pairs, qid_label
from qidlab.show.study import ShowOptions, Study, load_study
from qidlab.show.style import FigureUnavailable

NEW = ("cooldown", "peak-lr", "averaging")


@pytest.fixture(scope="module")
def study():
    return Study.from_frame(trajectory_frame(), options=ShowOptions(bootstrap=0, dpi=40))


def _line(ax, gid):
    return [line for line in ax.get_lines() if line.get_gid() == gid]


def _points(ax, gid) -> np.ndarray:
    lines = _line(ax, gid)
    if not lines:
        return np.empty((0, 2))
    return np.vstack([np.column_stack([line.get_xdata(), line.get_ydata()]) for line in lines]).astype(float)


def test_cooldown_draws_each_branch_end_joined_to_its_branch_point(study):
    fig = make_figure("cooldown", study)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == len(SIZES)
    frame = study.frame[study.frame.bits == 3.0]
    for ax, (arm, n) in zip(panels, SIZES.items()):
        assert arm in ax.get_title() and "-lr" not in ax.get_title()  # the main arm, not the variant
        mine = frame[frame.arm == arm]
        ends = _points(ax, "branch-end")
        branches = mine[mine.kind == "branch"].sort_values("tokens")
        assert ends.tolist() == branches[["tokens", "qid"]].to_numpy(float).tolist()
        before = _points(ax, "branch-point")
        run = mine[(mine.kind == "run") & mine.step.isin(BRANCH_FROM)].sort_values("tokens")
        assert before.tolist() == run[["tokens", "qid"]].to_numpy(float).tolist()
        assert _points(ax, "run")[:, 0].tolist() == sorted(mine[mine.kind == "run"].tokens)
        assert ax.get_xscale() == ax.get_yscale() == "log"
        assert ax.get_xlabel() == "training tokens D" and ax.get_ylabel() == "QiD [bits/byte]"
    # the cosine suite (not the one drawn) marks its end in size a's panel only
    assert _points(panels[0], "cosine-end").tolist() == [[1200 * TOKENS_PER_STEP, _qid(1e6, 1.2e6, 3.0, 1.1)]]
    assert not _line(panels[1], "cosine-end")
    assert "3-bit gptq" in fig.get_suptitle().replace("\n", " ")


def test_cooldown_draws_each_sizes_lr_factor_1_arm_whatever_the_names_say():
    """The reference arm named like a variant (``b-lr1x``), its 2x variant named like a size (``b2``,
    the shortest name of the size): the panel draws the lr_factor 1 arm."""
    names = {"b": "b-lr1x", "b-lr2x": "b2"}
    frame = trajectory_frame().replace({"arm": names, "trajectory": names})
    fig = make_figure("cooldown", Study.from_frame(frame, options=ShowOptions(bootstrap=0, dpi=40)))
    panel = [ax for ax in fig.axes if ax.get_visible()][1]
    assert "(b-lr1x)" in panel.get_title()
    mine = frame[(frame.arm == "b-lr1x") & (frame.bits == 3.0) & (frame.kind == "branch")].sort_values("tokens")
    assert (mine.lr_factor == 1).all()
    assert _points(panel, "branch-end").tolist() == mine[["tokens", "qid"]].to_numpy(float).tolist()


def test_cooldown_draws_each_contiguous_seed_run_and_not_the_shuffled_ones():
    """Seed 3 with the main run's batch order: its own line beside seed 0's; seed 1 with shuffled
    batches (QiD x3): not drawn (another treatment, not a replicate)."""
    frame = seeded_trajectory_frame()
    fig = make_figure("cooldown", Study.from_frame(frame, options=ShowOptions(bootstrap=0, dpi=30)))
    panel = [ax for ax in fig.axes if ax.get_visible()][0]
    runs = _line(panel, "run")
    assert len(runs) == 2  # seeds 0 and 3, one line each (not one line zigzagging between them)
    mine = frame[(frame.arm == "a") & (frame.bits == 3.0) & (frame.kind == "run") & (frame.schedule == "constant")]
    drawn = sorted(map(tuple, _points(panel, "run").tolist()))
    assert drawn == sorted(map(tuple, mine[mine.batch_order == "contiguous"][["tokens", "qid"]].to_numpy(float).tolist()))
    ends = frame[(frame.arm == "a") & (frame.bits == 3.0) & (frame.kind == "branch")]
    assert sorted(map(tuple, _points(panel, "branch-end").tolist())) == sorted(
        map(tuple, ends[ends.batch_order == "contiguous"][["tokens", "qid"]].to_numpy(float).tolist()))


def test_batch_order_draws_each_run_of_the_sizes_with_both_orders():
    frame = seeded_trajectory_frame()
    fig = make_figure("batch-order", Study.from_frame(frame, options=ShowOptions(bootstrap=0, dpi=30)))
    left, right = [ax for ax in fig.axes if ax.get_visible()][:2]
    runs = frame[(frame.arm == "a") & (frame.bits == 3.0) & (frame.kind == "run") & (frame.schedule == "constant")]
    for order, n_runs in (("contiguous", 2), ("shuffled", 1)):  # size b has one order: not drawn
        mine = runs[runs.batch_order == order]
        assert len(_line(left, order)) == len(_line(right, order)) == n_runs
        assert sorted(map(tuple, _points(left, order).tolist())) == sorted(
            map(tuple, mine[["tokens", "qid"]].to_numpy(float).tolist()))
        assert sorted(map(tuple, _points(right, order).tolist())) == sorted(
            map(tuple, mine[["loss16", "qid"]].to_numpy(float).tolist()))
    assert right.get_xlabel() == "16-bit loss [bits/byte]" and right.xaxis_inverted()


def test_batch_order_is_skipped_without_two_orders_of_one_size():
    one = seeded_trajectory_frame()
    one = one[one.batch_order == "contiguous"]
    with pytest.raises(FigureUnavailable, match="batch-order needs runs of one size with both batch orders"):
        make_figure("batch-order", Study.from_frame(one, options=ShowOptions(bootstrap=0)))
    with pytest.raises(FigureUnavailable, match="trajectory columns batch_order"):
        make_figure("batch-order", Study.from_frame(trajectory_frame(), options=ShowOptions(bootstrap=0)))


def test_cooldown_without_lr_factor_is_skipped_and_the_others_still_draw():
    study = Study.from_frame(trajectory_frame().drop(columns=["lr_factor"]), options=ShowOptions(bootstrap=0, dpi=30))
    with pytest.raises(FigureUnavailable, match="cooldown needs the trajectory columns lr_factor"):
        make_figure("cooldown", study)
    make_figure("peak-lr", study)
    make_figure("averaging", study)


def test_peak_lr_draws_the_size_with_several_peak_lrs(study):
    fig = make_figure("peak-lr", study)
    left, right = fig.axes[:2]
    assert "4M" in left.get_title()
    assert len(_line(left, "run")) == 3  # b, b-lr0.5x, b-lr2x
    assert len(_points(left, "branch-end")) == 3 * len(BRANCH_FROM)
    last = _points(right, "last-run")
    assert sorted(last[:, 0]) == [5e-4, 1e-3, 2e-3]
    for lr, q in last:
        assert q == pytest.approx(_qid(4e6, RUN_STEPS[-1] * TOKENS_PER_STEP, 3.0, 1 + lr * 100))
    assert right.get_xlabel() == "peak learning rate" and right.get_ylabel() == "QiD [bits/byte]"


def test_averaging_pairs_each_average_with_the_run_at_its_branch_point(study):
    fig = make_figure("averaging", study)
    left, right = fig.axes[:2]
    drawn = _points(left, "average")
    assert len(drawn) == 4 * len(BRANCH_FROM)  # a, b, b-lr0.5x, b-lr2x
    pairs = branch_pairs(study.frame[study.frame.bits == 3.0], "average")
    assert sorted(drawn.tolist()) == sorted(pairs[["qid_before", "qid"]].to_numpy(float).tolist())
    assert np.allclose(drawn[:, 1] / drawn[:, 0], 0.8)
    (identity,) = _line(left, "y=x")
    assert list(identity.get_xdata()) == list(identity.get_ydata())
    assert left.get_xscale() == left.get_yscale() == "log"
    assert len(_line(right, "ratio")) == 4  # one per run: the variant does not zig-zag with its size's run
    assert np.allclose(_points(right, "ratio")[:, 1], 0.8)
    assert "LAWA k = 5" in fig.get_suptitle().replace("\n", " ")


@pytest.mark.parametrize("name", NEW)
def test_without_the_trajectory_columns_each_is_skipped_with_the_reason(name):
    frame = trajectory_frame().drop(columns=["kind", "trajectory", "arm", "schedule", "peak_lr", "branch_from"])
    with pytest.raises(FigureUnavailable, match="trajectory columns kind, trajectory, arm"):
        make_figure(name, Study.from_frame(frame, options=ShowOptions(bootstrap=0)))


def test_peak_lr_is_skipped_when_every_size_has_one_peak_lr():
    study = Study.from_frame(trajectory_frame(lr_variants=False), options=ShowOptions(bootstrap=0))
    with pytest.raises(FigureUnavailable, match="two or more peak learning rates"):
        make_figure("peak-lr", study)
    make_figure("cooldown", study)  # the others still draw


def test_the_shipped_2026_data_set_skips_them():
    study = load_study("qidlab-gpu-2026", options=ShowOptions(bootstrap=0))
    for name in NEW:
        with pytest.raises(FigureUnavailable, match="trajectory columns"):
            make_figure(name, study)


def test_the_qid_axis_takes_a_data_sets_unit(tmp_path):
    folder = tmp_path / "c2"
    folder.mkdir()
    trajectory_frame(cosine=False).drop(columns=["unit"]).to_parquet(folder / "measurements.parquet")
    (folder / "manifest.json").write_text(json.dumps({
        "format": "qidlab-dataset/1", "name": "c2", "files": {"measurements": {"path": "measurements.parquet"}},
        "units": {"qid": "bits per byte, loss - loss16"}}))
    study = load_study(str(folder), options=ShowOptions(bootstrap=0))
    assert qid_label(study) == "QiD [bits/byte]"
    assert make_figure("averaging", study).axes[0].get_ylabel() == "QiD [bits/byte] of the weight average"
    bare = trajectory_frame(cosine=False).drop(columns=["unit"])
    assert qid_label(Study.from_frame(bare)) == "QiD [nats/token]"  # the data contract's unit when none is named
    assert qid_label(Study.from_frame(bare, unit="bits_per_byte")) == "QiD [bits/byte]"


def test_the_report_draws_them_or_lists_them_skipped():
    drawn = json.loads(render(Study.from_frame(trajectory_frame(), options=ShowOptions(bootstrap=0, dpi=30)))
                       ["report.json"])
    assert set(NEW) <= set(drawn["figures"]) and not set(NEW) & set(drawn["skipped"])
    frame = trajectory_frame(cosine=False).drop(columns=["kind", "trajectory", "arm", "schedule", "peak_lr"])
    files = render(Study.from_frame(frame, options=ShowOptions(bootstrap=0, dpi=30)))
    skipped = json.loads(files["report.json"])["skipped"]
    assert set(NEW) <= set(skipped) and all("trajectory columns" in skipped[n] for n in NEW)
    assert all(f"<b>{n}</b> (new)" in files["report.html"] for n in NEW)
    assert all(n in FIGURES for n in NEW)
