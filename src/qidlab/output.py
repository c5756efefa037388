"""Output written for people and programs, at ground level: the JSON that the command line prints
and that the report writes beside its page (one writer, so both read the same)."""

from __future__ import annotations

import json
import math
from typing import Any


def json_safe(obj: Any) -> Any:
    """JSON-safe: inf as the string "inf", NaN as null, numpy scalars as Python numbers."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
    return obj


def dump_json(doc: Any) -> str:
    """``doc`` as indented JSON (``json_safe``: no NaN or inf literals), without a final newline."""
    return json.dumps(json_safe(doc), indent=2, allow_nan=False)
