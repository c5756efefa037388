"""The show stage: the paper's figures and an HTML report of a measured study.

Public verbs: ``build_report(db, out_dir)`` (one self-contained report.html, the fit documents
next to it) and ``make_figure(name, study)`` for one figure (``FIGURES`` lists them), with
``load_study(db)`` / ``Study.from_frame(frame)`` giving the study they draw from.

Importing this package loads neither matplotlib nor pandas; drawing does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["FIGURES", "FigureUnavailable", "ShowOptions", "Study", "build_report", "load_study", "make_figure",
           "save_figure"]

_WHERE = {"FIGURES": "figures", "make_figure": "figures", "save_figure": "figures", "FigureUnavailable": "style",
          "ShowOptions": "study", "Study": "study", "load_study": "study", "build_report": "report"}

if TYPE_CHECKING:
    from .figures import FIGURES, make_figure, save_figure
    from .report import build_report
    from .study import ShowOptions, Study, load_study
    from .style import FigureUnavailable


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
