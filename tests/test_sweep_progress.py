"""The sweep's progress (issue 18): one updating line on a terminal, one line per checkpoint in a
log, readable labels, and an ETA weighted by model size and method cost."""

import io
from dataclasses import dataclass
from pathlib import Path

from qidlab.quantize.config import Reference16, config_from_dict
from qidlab.sweep.progress import DEFAULT_COST, METHOD_COST, Progress
from qidlab.sweep.study import job_label


@dataclass
class Ref:
    suite: str
    model: str
    step: int
    location: Path


def _plan(tmp_path):
    refs = []
    for name, size in (("small", 1000), ("large", 3000)):
        folder = tmp_path / name / "step4"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"\0" * size)
        refs.append(Ref("s", name, 4, folder))
    configs = [Reference16(), config_from_dict({"method": "rtn", "bits": 4}),
               config_from_dict({"method": "gptq", "bits": 4})]
    return [(ref, configs) for ref in refs]


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_eta_weighs_model_size_and_method(tmp_path):
    plan = _plan(tmp_path)
    meter = Progress(plan, 2, stream=io.StringIO())
    per_config = 1.0 + DEFAULT_COST + METHOD_COST["gptq"]
    assert meter.total == 12 and meter.total_weight == 2 * (1000 + 3000) * per_config
    meter.measured(plan[0][0], "gptq", "gptq 4-bit qid 0.1000")
    assert meter.done_weight == 1000 * METHOD_COST["gptq"]
    meter.measured(plan[1][0], "none", "16-bit loss 3.000")
    assert meter.done_weight == 1000 * METHOD_COST["gptq"] + 3000 * 1.0


def test_a_log_gets_one_line_per_checkpoint(tmp_path):
    plan = _plan(tmp_path)
    log = io.StringIO()
    meter = Progress(plan, 1, stream=log)
    for ref, configs in plan:
        for qid, cfg in zip((None, 0.25, 0.5), configs):
            label = "16-bit" if cfg.method == "none" else f"{cfg.method} 4-bit"
            if qid is None:
                meter.measured(ref, cfg.method, f"{label} loss 3.000")
            else:
                meter.measured(ref, cfg.method, f"{label} qid {qid}", qid=qid, label=label)
        meter.checkpoint_done(ref)
    meter.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("[3/6] small/step4: 16-bit loss 3.000; 2 quantized, qid 0.2500 to 0.5000 "
                               "(largest: gptq 4-bit)  (elapsed ")
    assert "ETA" in lines[0] and "none-bits=16" not in log.getvalue() and "\r" not in log.getvalue()


def test_a_terminal_gets_one_updating_line_and_failures_on_their_own(tmp_path):
    plan = _plan(tmp_path)
    term = Terminal()
    meter = Progress(plan, 1, stream=term)
    ref = plan[0][0]
    meter.measured(ref, "none", "16-bit loss 3.000")
    meter.measured(ref, "rtn", "rtn 4-bit FAILED (boom)", failed=True)
    meter.checkpoint_done(ref)
    meter.close()
    text = term.getvalue()
    assert text.count("\n") == 2 and "\r\033[K[1/6] small/step4 16-bit loss 3.000" in text
    assert "[2/6] small/step4 rtn 4-bit FAILED (boom)\n" in text


def test_labels_are_readable():
    assert job_label({"method": "none", "bits": 16}) == "16-bit"
    assert job_label({"method": "gptq", "bits": 3, "group_size": None, "shared_hessian": True}) == \
        "gptq 3-bit per-channel shared_hessian"
    assert job_label({"method": "fp", "exp_bits": 2, "man_bits": 1, "block_size": 32}) == "fp e2m1 block 32"
    assert job_label({"method": "rtn", "bits": 4, "group_size": 32}) == "rtn 4-bit g32"
