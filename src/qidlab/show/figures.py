"""The figures: the paper's (Ouyang et al. 2024) and the diagnostics it lacks, by name.

Each entry names a function ``draw(study) -> matplotlib.figure.Figure`` (lazily imported, so
that ``import qidlab.show`` loads no matplotlib). A figure whose data the study lacks raises
``FigureUnavailable`` saying what is missing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import QidlabError, did_you_mean
from ..files import open_atomic
from .style import tidy

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .study import Study


@dataclass(frozen=True)
class FigureSpec:
    name: str
    paper: str  # which figure of the paper it redraws ("" for the new ones)
    caption: str
    draw: str  # "module:function" under qidlab.show


FIGURES: dict[str, FigureSpec] = {f.name: f for f in (
    FigureSpec("fig1", "Fig. 1", "QiD projected to 100T training tokens for chosen sizes and bit widths (fitted "
               "ouyang2024); grey: QiD large enough that loss16 + QiD exceeds the uniform-guess loss ln(V) (losses in nats "
               "per token only); bands: "
               "95% intervals over the bootstrap replicates; dashed: N or D more than 2x outside the fitted range",
               "fitted:projection"),
    FigureSpec("fig2", "Fig. 2", "loss of the 16-bit and the quantized models vs training tokens, per size",
               "measured:loss_vs_tokens"),
    FigureSpec("fig3", "Fig. 3", "QiD vs training tokens with ouyang2024-tokens (QiD = b D^beta) fitted per (N, P)",
               "fitted:qid_vs_tokens"),
    FigureSpec("fig4", "Fig. 4", "QiD vs model size with ouyang2024-size (QiD = a / N^alpha) fitted per (D, P)",
               "fitted:qid_vs_size"),
    FigureSpec("fig5", "Fig. 5", "QiD vs bit width with ouyang2024-bits (QiD = c / P^gamma) fitted per (N, D)",
               "fitted:qid_vs_bits"),
    FigureSpec("fig6", "Fig. 6", "the unified law QiD = k D^beta / (N^alpha P^gamma) fitted to every point",
               "fitted:unified"),
    FigureSpec("fig7", "Fig. 7", "quantized loss predicted as loss16 (fitted 16-bit loss law) + QiD (fitted "
               "ouyang2024) against the measured one", "fitted:predicted_loss"),
    FigureSpec("fig8", "Fig. 8", "QiD measured on two eval sets", "measured:eval_sets"),
    FigureSpec("fig9", "Fig. 9", "QiD by quantization method, ouyang2024 fitted per method to the points of one bit "
               "width (4 when every method has it): its alpha and beta come from that bit width alone and differ "
               "from the fitted-laws table's, which are fitted to every bit width",
               "fitted:methods"),
    FigureSpec("fig10", "Fig. 10 (right)", "measured vs predicted QiD (fitted ouyang2024)",
               "fitted:actual_vs_predicted"),
    FigureSpec("fig11", "Fig. 11", "measured QiD over model size x training tokens, with the fitted law's contours",
               "measured:heatmap"),
    FigureSpec("fig12", "Fig. 12", "changes of the weights between consecutive checkpoints (weight-dynamics.json)",
               "training:weight_changes"),
    FigureSpec("fig14", "Fig. 14", "training loss of low-bit models and their bf16 twins (train-log.csv); the "
               "paper's Fig. 13 (training tokens of 7B-scale LLMs by year) is not redrawn: it shows published "
               "budgets, not measurements",
               "training:low_bit_training"),
    FigureSpec("residuals", "", "log residuals ln(measured / predicted QiD) of the unified QiD laws vs D, N and P",
               "diagnostics:residuals"),
    FigureSpec("exponent-ci", "", "fitted exponents with 95% bootstrap intervals, and the published values",
               "diagnostics:exponent_ci"),
    FigureSpec("holdout", "", "extrapolation error of each law: refitted without the largest N or the latest D, "
               "mean |relative error| on the held-out points (a grouped law: the median over its fits, as in the "
               "fitted-laws table)", "diagnostics:holdout"),
    FigureSpec("cooldown", "", "QiD before and after a cooldown at equal D: per size, the constant-lr run vs D "
               "(line), each cooldown branch's end (square, the lr decayed to 0) joined to the run checkpoint it "
               "left (open circle), cosine runs dotted with their end a cross; 95% CIs as bars (needs the "
               "trajectory columns of qidlab.train.trajectories)", "schedules:cooldown"),
    FigureSpec("peak-lr", "", "QiD of one size trained at several peak learning rates: runs vs D (lines) and "
               "cooldown ends (squares), and QiD at the last D vs the peak lr", "schedules:peak_lr"),
    FigureSpec("averaging", "", "QiD of the weight average (LAWA) of the last checkpoints before each branch point "
               "against the run checkpoint at the same D (y = x dashed), and their ratio vs D",
               "schedules:averaging"),
    FigureSpec("batch-order", "", "QiD of runs of one size and peak lr whose batches were consecutive "
               "sequences (contiguous, solid) or drawn from across the corpus (shuffled, dashed): vs D and vs the "
               "16-bit loss (needs the batch_order column of qidlab.train.trajectories)", "schedules:batch_order"),
)}

#: The paper's figures not redrawn, and why (the report says so where its numbering skips them).
NOT_REDRAWN = {"Fig. 13": "it plots the training tokens of state-of-the-art 7B-scale LLMs by year (2020-2024, "
                          "about 50x more), published training budgets rather than measurements of a study"}

FORMATS = (".png", ".svg", ".pdf")


def list_figures() -> list[FigureSpec]:
    return list(FIGURES.values())


def get_figure(name: str) -> FigureSpec:
    if name in FIGURES:
        return FIGURES[name]
    raise QidlabError(f"no figure {name!r}{did_you_mean(name, FIGURES)} (figures: {', '.join(FIGURES)})")


def make_figure(name: str, study: "Study") -> "Figure":
    """Figure ``name`` of ``study``; ``FigureUnavailable`` when the study lacks its data."""
    spec = get_figure(name)
    module, function = spec.draw.split(":")
    draw = getattr(importlib.import_module(f"{__package__}.{module}"), function)
    fig = draw(study)
    tidy(fig)
    return fig


def check_output(path: str | Path) -> Path:
    """``path`` as an image file to write: a known format in an existing folder."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise QidlabError(f"{path}: unknown image format {path.suffix!r} (use {', '.join(FORMATS)})")
    if not path.parent.is_dir():
        raise QidlabError(f"{path}: folder {path.parent} does not exist")
    return path


def save_figure(fig: "Figure", path: str | Path, dpi: int | None = None) -> Path:
    """Write ``fig`` to ``path`` (.png, .svg or .pdf) through a temporary file: a failure
    leaves no half-written file."""
    path = check_output(path)
    with open_atomic(path, "wb") as fh:
        fig.savefig(fh, format=path.suffix[1:].lower(), dpi=dpi)
    return path
