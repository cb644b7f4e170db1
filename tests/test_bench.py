"""The benchmarks still run and print their tables (at tiny sizes; the figures themselves are not checked here)."""

import importlib.util
import re
import subprocess
import sys


def _run(module: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PATH": ""},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_bench_agop_prints_every_row_and_the_ratios():
    out = _run("agoplight.bench.agop", "--repeats", "1", "--probe", "64", "--k", "2", "--loop-samples", "4")
    for row in ("exact AGOP, all 3 layers", "vmap(jacrev)", "Python loop", "digits convnet: exact AGOP", "tiny GPT"):
        assert row in out
    ratios = re.findall(r"^  (.+?)\s+([0-9.]+)\s+\(target", out, flags=re.MULTILINE)
    assert len(ratios) == 4 and all(float(value) > 0 for _, value in ratios), out


def test_bench_rfm_runs_one_task():
    out = _run("agoplight.bench.rfm", "--tasks", "wine", "--repeats", "1", "--threads", "1")
    assert "wine" in out
    if importlib.util.find_spec("xrfm") is None:  # the peer is installed for benchmarks only, never a dependency
        assert "xRFM is not installed" in out
    else:
        assert "xRFM score" in out
