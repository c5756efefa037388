"""`qidlab report`: one self-contained HTML page (checked in headless Chromium), the fit documents
next to it, the figures it had to skip, and nothing written for bad input.

The browser test needs Chromium, chromium-driver and selenium: `bash scripts/test.sh` installs
the Debian packages in CI (CI set) or as root. With CI=true a missing browser fails the test;
elsewhere it is skipped with the reason."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import statistics
from html.parser import HTMLParser

import pytest

import show_fixtures as sf
from qidlab.cli import main
from qidlab.errors import QidlabError
from qidlab.laws.analysis import token_grid
from qidlab.laws.solve import law_params
from qidlab.show.figures import FIGURES
from qidlab.show.html import number
from qidlab.show.report import build_report, render
from qidlab.show.study import ShowOptions, Study, load_study
from qidlab.store import Store

PNG = b"\x89PNG\r\n\x1a\n"
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
#: Figures drawn from the trajectory columns (qidlab.show.schedules), which the synthetic store lacks.
SCHEDULES = ("cooldown", "peak-lr", "averaging", "batch-order")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The report of the synthetic study, made by the command line: (folder, its --json document)."""
    root = tmp_path_factory.mktemp("report")
    suite = sf.write_suite(root)
    db = sf.write_store(root / "study.db", suite)
    out = root / "out"
    argv = ["report", str(db), "--out", str(out), "--bootstrap", "30", "--dpi", "50", "--json"]
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(argv) == 0
    return out, json.loads(buffer.getvalue())


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _tags(html: str) -> list[tuple[str, dict]]:
    parser = _Tags()
    parser.feed(html)
    return parser.tags


def test_the_report_holds_every_figure_as_an_embedded_png(report):
    out, doc = report
    assert doc["report"] == str(out / "report.html")
    assert set(doc["skipped"]) == set(SCHEDULES)  # the synthetic store has no trajectory columns
    assert doc["figures"] == [f for f in FIGURES if f not in SCHEDULES]
    tags = _tags((out / "report.html").read_text())
    images = [attrs["src"] for tag, attrs in tags if tag == "img"]
    assert len(images) == len(FIGURES) - len(SCHEDULES)
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG)
    assert not [t for t, _ in tags if t == "script"]
    external = [a.get("src") or a.get("href") for _, a in tags
                if (a.get("src") or a.get("href") or "").split(":")[0] in ("http", "https", "file", "//")]
    assert external == []


def test_a_gap_in_the_papers_figure_numbers_is_explained(report):
    from qidlab.show.figures import NOT_REDRAWN

    page = (report[0] / "report.html").read_text()
    numbers = {int(re.match(r"Fig\. (\d+)", s.paper).group(1)) for s in FIGURES.values() if s.paper}
    gaps = [n for n in range(min(numbers), max(numbers)) if n not in numbers]
    assert gaps == [13]
    for n in gaps:
        assert f"Fig. {n}" in NOT_REDRAWN and f"The paper&#x27;s Fig. {n} is not redrawn: " in page


def test_the_laws_table_and_the_holdout_figure_show_the_same_statistic(report):
    out, _ = report
    page = (out / "report.html").read_text()
    fit = json.loads((out / "fit-ouyang2024-tokens.json").read_text())
    errors = [h["mape"] for f in fit["fits"] for h in f["holdout"] if h["held_out"] == "tokens"]
    assert len(errors) > 1  # a grouped law: one hold-out error per group, summed up by their median
    assert f"latest D left out: median {statistics.median(errors):.3g}%" in page
    assert "median over the law&#x27;s per-group fits" in page and "holdout figure" in page
    assert "the median over its fits" in FIGURES["holdout"].caption


def test_the_fit_documents_are_written_next_to_it_and_read_back(report):
    out, doc = report
    assert sorted(p.name for p in out.glob("fit-*.json")) == doc["fits"]
    assert {"fit-ouyang2024.json", "fit-kaplan.json", "fit-chinchilla.json", "fit-kumar2024-ptq.json",
            "fit-ouyang2024-tokens.json"} <= set(doc["fits"])
    fit = json.loads((out / "fit-ouyang2024.json").read_text())
    params, _ = law_params("ouyang2024", fit=fit)
    assert params["beta"] == pytest.approx(sf.TRUTH["beta"], rel=0.03)
    assert fit["fits"][0]["ci95"] and {h["held_out"] for h in fit["fits"][0]["holdout"]} == {"n_params", "tokens"}
    assert doc["laws_not_fitted"]["chen2025"].startswith("models group_size")


def test_table1_comes_from_the_fitted_law(report):
    out, _ = report
    html = (out / "report.html").read_text()
    params, _ = law_params("ouyang2024", fit=json.loads((out / "fit-ouyang2024.json").read_text()))
    for n, bits, qid in ((1e9, 2.0, 0.2), (70e9, 3.0, 0.4), (405e9, 4.0, 0.5)):
        cell = token_grid("ouyang2024", params, [n], [bits], [qid]).tokens_trillion[0]
        # the value, a mark where it extrapolates (N <= 1B fitted), its 95% interval below
        assert re.search(f"<td class=num>{re.escape(number(float(cell)))}{' ⚠' if n > 2e9 else '( ⚠)?'}<br>\\[", html)
    assert "<td class=num>17.35</td>" in html  # the paper's printed 70B, 4-bit, QiD 0.2 cell


def _cli_json(capsys, *argv):
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_table1_intervals_and_marks_are_those_of_qidlab_table1(report, capsys):
    out, doc = report
    cli = _cli_json(capsys, "table1", "--law", "ouyang2024", "--fit", str(out / "fit-ouyang2024.json"),
                    "--sizes", "1B,7B,70B,405B", "--bits", "2,3,4", "--qid", "0.2,0.3,0.4,0.5")
    expected = {(r["n_params"], r["bits"], r["qid"]): r for r in cli["rows"]}
    assert len(doc["table1"]["rows"]) == len(expected) == 48
    for row in doc["table1"]["rows"]:
        same = expected[(row["n_params"], row["bits"], row["qid"])]
        assert row["interval"] == pytest.approx(same["interval"], rel=1e-12)
        assert row["extrapolation"] == same["extrapolation"]
    assert doc["table1"]["warnings"] == cli["warnings"] and cli["warnings"]
    html = (out / "report.html").read_text()
    assert all(h_escape(w) in html for w in cli["warnings"])


def h_escape(text):
    import html

    return html.escape(text)


def test_fig1_crossings_carry_intervals_marks_and_the_vocabulary_note(report):
    out, doc = report
    fig1 = doc["fig1"]
    seven_2bit = next(c for c in fig1["crossings"] if c["n_params"] == 7e9 and c["bits"] == 2.0)
    lo, hi = seven_2bit["interval"]
    assert lo < seven_2bit["tokens_worse_than_random"] < hi
    # every size of Fig. 1 (7B-405B) lies far above the fitted 10M-1B
    assert all("n_params" in [e["variable"] for e in c["extrapolation"]] for c in fig1["crossings"])
    assert "4096" in fig1["random_level_note"] and "Llama-3" in fig1["random_level_note"]
    html = (out / "report.html").read_text()
    assert 'id="fig1"' in html and "Llama-3" in html


def test_model_choice_is_qidlab_fit_compare(report, capsys):
    out, doc = report
    cli = _cli_json(capsys, "fit", str(out.parent / "study.db"), "--compare", "--where", "eval_set=web",
                    "method=gptq")
    assert doc["model_choice"]["summary"] == cli["summary"]
    assert [s["label"] for s in doc["model_choice"]["slices"]] == [s["label"] for s in cli["slices"]]
    assert len(cli["slices"]) == 5  # four sizes, then the latest D of each
    html = (out / "report.html").read_text()
    assert 'id="model-choice"' in html and f"chosen: {cli['chosen']}" in html


def test_the_report_states_its_provenance(report):
    out, doc = report
    html = (out / "report.html").read_text()
    for fact in ("abc1234", "qidlab 0.1.0, torch 2.13.0", doc["store"]["sha256"], "web: 4 documents",
                 "synth: 4 models, 20 checkpoints", "gptq: 120 measurements", doc["provenance"]["code_revision"]):
        assert fact in html


def test_figures_without_data_are_listed_with_the_reason(tmp_path):
    db = sf.write_store(tmp_path / "bare.db", None, eval_sets=("web",), methods=("gptq",))
    frame = load_study(db).frame.drop(columns=["loss16", "loss"])
    files = render(Study.from_frame(frame, options=ShowOptions(bootstrap=0, dpi=40), source=str(db)))
    skipped = json.loads(files["report.json"])["skipped"]
    assert set(skipped) == {"fig2", "fig7", "fig8", "fig9", "fig12", "fig14", "exponent-ci", *SCHEDULES}
    assert "two eval sets" in skipped["fig8"] and "loss16" in skipped["fig2"]
    assert "trajectory columns" in skipped["cooldown"]
    assert f"Figures skipped ({len(skipped)})" in files["report.html"] and len(skipped) == 11
    assert files["report.html"].count("<img ") == len(FIGURES) - len(skipped)


def test_bad_input_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(QidlabError, match="no such store"):
        build_report(tmp_path / "missing.db", out)
    Store(tmp_path / "empty.db").close()
    assert main(["report", str(tmp_path / "empty.db"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qidlab: error:") and "has no measurements" in err and err.count("\n") == 1
    assert not out.exists()


# ---------------------------------------------------------------------------
# the browser


def _browser_or_skip():
    """(chromium, chromedriver) paths; fail in CI when missing, skip elsewhere."""
    chromium = next(filter(None, (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        selenium = None
    missing = [what for what, found in (("chromium", chromium), ("chromedriver (Debian: chromium-driver)", driver),
                                        ("selenium", selenium)) if not found]
    if missing:
        message = f"the browser test needs {', '.join(missing)}; bash scripts/test.sh installs them in CI or as root"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return chromium, driver


def _open_browser(chromium: str, driver: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def _broken_images(browser) -> list:
    return browser.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt)")


def _console_errors(browser) -> list:
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


@pytest.fixture(scope="module")
def browser_paths():
    return _browser_or_skip()


def test_the_report_renders_in_headless_chromium(browser_paths, report, tmp_path):
    chromium, driver = browser_paths
    out, _ = report
    browser = _open_browser(chromium, driver)
    try:
        browser.get((out / "report.html").as_uri())
        assert browser.execute_script("return document.images.length") == len(FIGURES) - len(SCHEDULES)
        assert _broken_images(browser) == []
        assert _console_errors(browser) == []
        shot = tmp_path / "report.png"
        assert browser.save_screenshot(str(shot))
        assert shot.read_bytes().startswith(PNG) and shot.stat().st_size > 1000
        # the same checks see a broken image and a console error (they can fail)
        bad = tmp_path / "bad.html"
        bad.write_text('<html><head><link rel="icon" href="data:,"></head><body><img alt="missing" src="missing.png">'
                       '<script>console.error("boom")</script></body></html>')
        browser.get(bad.as_uri())
        assert _broken_images(browser) == ["missing"]
        assert any("boom" in e["message"] for e in _console_errors(browser))
    finally:
        browser.quit()
