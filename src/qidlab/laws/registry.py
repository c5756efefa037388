"""The law registry: ``get_law(name)``, ``list_laws()``, ``register_law(law)``, ``define_law(...)``."""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

from ..errors import QidlabError, did_you_mean
from .spec import Fold, FunctionLaw, Law, Param, Published, Variable

_LAWS: dict[str, Law] = {}


def register_law(law: Law, *, replace: bool = False) -> Law:
    """Add ``law`` to the registry under ``law.name`` and return it."""
    if law.name in _LAWS and not replace:
        raise QidlabError(f"a law named {law.name!r} is already registered (pass replace=True)")
    _LAWS[law.name] = law
    return law


def get_law(name: str | Law) -> Law:
    """The registered law called ``name``; a clear error with close matches otherwise."""
    if isinstance(name, Law):
        return name
    _load_builtins()
    if name in _LAWS:
        return _LAWS[name]
    raise QidlabError(f"unknown law {name!r}{did_you_mean(name, _LAWS)} (known: {', '.join(sorted(_LAWS))})")


def list_laws() -> list[Law]:
    _load_builtins()
    return [_LAWS[k] for k in sorted(_LAWS)]


def define_law(
    name: str,
    fn: Callable,
    params: Iterable[Param],
    variables: Iterable[str | Variable],
    *,
    quantity: str = "qid",
    targets: Iterable[str] | None = None,
    formula: str = "",
    published: Mapping[str, Published] | None = None,
    folds: Iterable[Fold] = (),
    register: bool = True,
) -> Law:
    """A user-defined law from a plain function ``fn(X, **params) -> y`` (natural units).

    ``X`` maps canonical column names to arrays (n,); each parameter arrives as an array
    (..., 1). The law fits, bootstraps and inverts like a built-in one.
    """
    variables = tuple(v if isinstance(v, Variable) else Variable(v, v) for v in variables)
    law = FunctionLaw(
        name=name,
        title=f"user-defined law {name}",
        formula=formula or getattr(fn, "__doc__", "") or name,
        quantity=quantity,
        targets=tuple(targets) if targets else (quantity,),
        variables=variables,
        params=tuple(params),
        published=dict(published or {}),
        citation="user-defined",
        fn=fn,
        folds=tuple(folds),
    )
    return register_law(law, replace=True) if register else law


def _load_builtins() -> None:
    from . import catalog  # noqa: F401  (registers on import)
