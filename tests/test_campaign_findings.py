"""campaign/findings.py, which prints every number of docs/findings.md, runs on the shipped GPU
campaign data set and its committed training logs, and its tables agree with a direct fit."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pandas as pd
import pytest

from qidlab import data
from qidlab.laws.fit import fit_law

REPO = Path(__file__).resolve().parents[1]


def _findings():
    spec = importlib.util.spec_from_file_location("campaign_findings", REPO / "campaign" / "findings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif("qidlab-gpu-2026" not in data.names(), reason="the GPU campaign's data set is not shipped")
def test_findings_script_prints_every_section_and_its_fits_match_a_direct_fit(capsys):
    _findings().main(["findings.py"])
    out = capsys.readouterr().out
    for heading in ("Ouyang law, D >= 0", "Ouyang law, D >= 4e+06", "(n_params)", "Other QiD laws", "Fig. 8",
                    "Fig. 9", "Cosine vs constant", "BitNet b1.58"):
        assert heading in out, heading
    row = re.search(r"\| en \| debian-en-heldout \| gptq \| (\d+) \| [^|]+ \| ([\d.]+) \[", out.split("D >= 4e+06")[1])
    frame = data.load("qidlab-gpu-2026")
    rows = frame[(frame.suite == "en") & (frame.eval_set == "debian-en-heldout") & (frame.method == "gptq")
                 & (frame.tokens >= 4e6)]
    fit = fit_law(rows, "ouyang2024")[0]
    assert int(row.group(1)) == fit.n and float(row.group(2)) == pytest.approx(fit.params["beta"], abs=5e-4)
    bitnet = out.split("BitNet b1.58")[1]
    assert bitnet.count("| en | h") == bitnet.count("| code | h") == 2  # both pairs read from the logs
    rerun = out.split("trained twice")[1]  # the first run's rows of the two retrained models, paired with the data set's
    first = pd.read_csv(REPO / "campaign" / "results" / "2026-11-23-gpu" / "code-first-run-h512-h768.csv")
    pairs = [int(n) for n in re.findall(r"^\| \d \| (\d+) \|", rerun, flags=re.M)]
    assert len(pairs) == 3 and sum(pairs) == len(first)
