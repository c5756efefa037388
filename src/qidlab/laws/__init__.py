"""Scaling laws: the registry of published forms, fitting, prediction and inversion.

Public verbs: ``get_law``/``list_laws``/``define_law`` (registry), ``fit_law`` and the
sklearn-shaped ``LawEstimator`` (fitting), ``solve`` (inversion), plus the analyses in
``qidlab.laws.analysis`` (Table 1 grid, 100T projection, D_crit, optimal format), prediction
intervals and extrapolation warnings in ``qidlab.laws.uncertainty``, and the out-of-sample
comparison of QiD law families in ``qidlab.laws.compare``.
"""

from .registry import define_law, get_law, list_laws, register_law
from .spec import Fold, Law, Param, Published, Variable

__all__ = ["define_law", "get_law", "list_laws", "register_law", "Fold", "Law", "Param", "Published", "Variable"]
