"""Quantization settings besides the bit width, and holding them fixed: a law or a figure that does
not model a setting sees the rows at its most common value (``hold_settings``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import pandas as pd

#: Quantization settings besides the bit width (held at their most common value where a
#: law or a figure does not model them).
SETTINGS = ("group_size", "exp_bits", "man_bits", "block_size")


def hold_settings(frame: "pd.DataFrame", keep: Sequence[str] = ()) -> tuple["pd.DataFrame", dict[str, float]]:
    """``frame`` at the most common value of each quantization setting not in ``keep``
    (empty cells count as a value), and the values held (constant ones included)."""
    held = {}
    for column in SETTINGS:
        if column in keep or column not in frame.columns or frame[column].isna().all():
            continue
        value = frame[column].value_counts(dropna=False).index[0]
        if value != value:  # NaN: the rows that leave this setting empty
            frame = frame[frame[column].isna()]
        else:
            frame = frame[frame[column] == value]
            held[column] = float(value)
    return frame, held
