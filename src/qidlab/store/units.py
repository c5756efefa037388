"""The unit a store's losses and QiD are in: every measurement's ``[scoring] unit`` (its
``config_json``; absent: nats per token, what stores written before the option hold).

One unit per store or data set: QiD scored in several units would not be comparable in one table.
``loss_unit`` reads it from config documents (a store's ``config_json`` texts or a data set
manifest's ``configs``); ``read.read_loss_unit`` from a store file; ``publish.units_of`` writes it
into a data set's manifest in words.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from ..errors import QidlabError

#: The words of each ``[scoring] unit`` (``qidlab.evaluate.score.UNITS``); the default first.
LOSS_UNITS = {"nats_per_token": "nats per token", "bits_per_byte": "bits per byte",
              "nats_per_ref_token": "nats per token of the reference tokenizer",
              "nats_per_word": "nats per word (lm-evaluation-harness's words)"}
DEFAULT_LOSS_UNIT = "nats_per_token"


def scoring_unit(config: Any) -> str:
    """The ``[scoring] unit`` of one measurement config (a dict or its JSON text); the default
    when it names none."""
    if isinstance(config, (str, bytes)):
        try:
            config = json.loads(config)
        except ValueError:
            config = None
    scoring = config.get("scoring") if isinstance(config, dict) else None
    unit = scoring.get("unit") if isinstance(scoring, dict) else None
    return str(unit) if unit else DEFAULT_LOSS_UNIT


def loss_unit(configs: Iterable[Any], where: object) -> str:
    """The one unit of ``configs`` (``scoring_unit`` of each; none given: the default); several
    units are one ``QidlabError`` naming ``where``."""
    found = sorted({scoring_unit(c) for c in configs})
    if len(found) > 1:
        raise QidlabError(f"{where}: measurements scored in several units ({', '.join(found)}); "
                          "publish one unit per data set")
    return found[0] if found else DEFAULT_LOSS_UNIT
