"""``agoplight report``: pages drawn from tiny real runs (the main job's MLP and configs/rfm_digits.yaml) and from a
synthetic RFM run folder, opened in headless Chromium to check that every picture loads."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from agoplight import cli
from agoplight.errors import ConfigurationError
from agoplight.report import Report, build_report

ROOT = Path(__file__).resolve().parents[1]

# Headless, no background traffic, no DNS: the browser only ever opens the file:// pages these tests wrote.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--metrics-recording-only",
    "--host-resolver-rules=MAP * ~NOTFOUND",
]


def _train(root: Path, config: str, *overrides: str) -> Path:
    """Train ``configs/<config>.yaml`` through agoplight's CLI in this process, with a CSV logger only (the default
    W&B logger would leave its service running here; tests/test_train_cli.py runs the full command), and return
    the run folder."""
    args = ["fit", "--config", str(ROOT / "configs" / f"{config}.yaml"), "--trainer.enable_progress_bar", "false"]
    args += ["--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(root)]
    args += ["--trainer.logger.name", config, "--trainer.logger.version", "20260101-000000", *overrides]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["agoplight"])  # LightningCLI warns when it sees pytest's own arguments
        cli.train(args)
    return root / config / "20260101-000000"


@pytest.fixture(scope="module")
def network_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch of the main job, 32 units wide, measured every 10 steps."""
    overrides = ["--trainer.max_epochs", "1", "--model.init_args.width", "32"]
    overrides += ["--trainer.callbacks.init_args.every_n_train_steps", "10"]
    overrides += ["--trainer.callbacks.init_args.log_images", "none"]
    return _train(tmp_path_factory.mktemp("runs"), "mlp_digits", *overrides)


@pytest.fixture(scope="module")
def network_report(network_run: Path) -> Report:
    return build_report(network_run)


@pytest.fixture(scope="module")
def rfm_digits_report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    """The report of two iterations of configs/rfm_digits.yaml."""
    overrides = ("--trainer.max_epochs", "2", "--model.init_args.log_images", "none")
    return build_report(_train(tmp_path_factory.mktemp("runs"), "rfm_digits", *overrides))


@pytest.fixture(scope="module")
def rfm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder shaped like an RFM run's: three iterations on the 8x8 digits, ``M`` and ``agop`` per iteration."""
    run_dir = tmp_path_factory.mktemp("rfm") / "20260101-000000"
    generator = torch.Generator().manual_seed(0)
    for iteration in range(3):
        factor = torch.randn(64, 8, generator=generator)
        agop = factor @ factor.T  # (64, 64), rank 8
        M = torch.eye(64) if iteration == 0 else agop / agop.max()
        path = run_dir / "agop" / f"step_{iteration:07d}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"step": iteration, "matrices": {"rfm": {"M": M, "agop": agop}}}, path)

    with open(run_dir / "metrics.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["epoch", "step", "val/acc", "val/loss"])
        writer.writeheader()
        for iteration, acc in enumerate([0.90, 0.96, 0.95]):
            writer.writerow({"epoch": iteration, "step": iteration, "val/acc": acc, "val/loss": 1 - acc})
    config = {
        "model": {"class_path": "agoplight.rfm.RFM", "init_args": {"kernel": "laplace", "bandwidth": 10.0}},
        "data": {"class_path": "agoplight.data.DigitsDataModule", "init_args": {"batch_size": 64}},
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    return run_dir


@pytest.fixture(scope="module")
def rfm_report(rfm_run: Path) -> Report:
    return build_report(rfm_run)


@pytest.fixture(scope="module")
def browser() -> str:
    """Chromium's executable; the test skips without one, unless AGOPLIGHT_REQUIRE_BROWSER is set (.ci/run sets it
    once the browser is installed)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    reason = "no headless browser: install Debian's `chromium` package (.ci/run does when apt-get is available)"
    if os.environ.get("AGOPLIGHT_REQUIRE_BROWSER"):
        pytest.fail(f"AGOPLIGHT_REQUIRE_BROWSER is set but there is {reason}")
    pytest.skip(reason)


def test_network_report(network_run, network_report, tmp_path):
    saved = sorted(int(p.stem.split("_")[1]) for p in (network_run / "agop").glob("step_*.pt"))
    assert saved == [0, 10, 17]

    report = network_report
    assert report.index == network_run / "report" / "index.html"
    names = {path.name for path in report.images}
    for step in (0, 17):  # the first and last saved step
        for layer in ("net.0", "net.2"):
            assert {f"matrices_{layer}_step{step:07d}.png", f"spectrum_{layer}_step{step:07d}.png"} <= names
        assert f"eigenvectors_net.0_step{step:07d}.png" in names  # 64 inputs: the 8x8 digits
        assert f"eigenvectors_net.2_step{step:07d}.png" not in names  # 32 hidden features: no picture
    assert {"nfa_net.0.png", "nfa_net.2.png", "validation.png"} <= names
    assert len(names) == 3 + 2 * 3 + 2 * 2
    assert report.skipped == [
        "Eigenvector images of net.2: its input has 32 values, not the 1x8x8 image of the data (DigitsDataModule), "
        "and it is not a convolution."
    ]

    page = report.index.read_text()
    assert _image_sources(page) == names
    assert "Pearson(NFM, AGOP^1/2)" in page and "val/acc" in page and "Skipped" in page
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", page)  # nothing from the network

    with pytest.raises(ConfigurationError, match=r"no matrices saved at step \[7\]\. Saved steps: 0, 10, 17"):
        build_report(network_run, tmp_path / "bad", steps=[7])


def test_report_skips_matrices_that_are_not_finite(network_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(network_run, run)
    saved = torch.load(run / "agop" / "step_0000017.pt")
    saved["matrices"]["net.2"]["agop"][0, 0] = float("nan")
    torch.save(saved, run / "agop" / "step_0000017.pt")

    report = build_report(run)
    names = {path.name for path in report.images}
    assert "matrices_net.0_step0000017.png" in names and "matrices_net.2_step0000017.png" not in names
    reason = "Matrices of net.2 at step 17: its matrices in step_0000017.pt are not finite (the model diverged?)."
    assert reason in report.skipped


def test_rfm_report(rfm_report):
    report = rfm_report
    names = {path.name for path in report.images}
    for iteration in range(3):
        stem = f"rfm_iter{iteration:04d}"
        assert {f"matrices_{stem}.png", f"spectrum_{stem}.png", f"eigenvectors_{stem}.png"} <= names
    assert "validation.png" in names
    assert report.skipped == []

    page = report.index.read_text()
    assert _image_sources(page) == names
    assert "RFM run" in page and "Iteration 2" in page and "against <code>epoch</code>" in page


def test_rfm_report_of_a_real_run(rfm_digits_report):
    report = rfm_digits_report
    names = {path.name for path in report.images}
    kinds = ("matrices", "spectrum", "eigenvectors")
    assert names == {f"{kind}_rfm_iter{i:04d}.png" for kind in kinds for i in (0, 1)} | {"validation.png"}
    assert report.skipped == []
    page = report.index.read_text()
    assert "RFM run" in page and "Best iteration by validation score" in page and "val/acc" in page


def test_report_command(rfm_run, tmp_path, monkeypatch, capsys):
    """``agoplight report`` draws a report, ``agoplight fit`` still trains; a folder that is not a run folder is a
    short error."""
    trained = []
    monkeypatch.setattr(cli, "train", lambda: trained.append(sys.argv[1:]))
    monkeypatch.setattr(sys, "argv", ["agoplight", "fit", "--config", "configs/mlp_digits.yaml"])
    cli.main()
    assert trained == [["fit", "--config", "configs/mlp_digits.yaml"]]

    argv = ["agoplight", "report", str(rfm_run), "--out", str(tmp_path / "out"), "--steps", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 0
    assert "Report:" in capsys.readouterr().out
    drawn = {path.name for path in (tmp_path / "out").glob("*.png")}
    expected = {f"{kind}_rfm_iter0001.png" for kind in ("matrices", "spectrum", "eigenvectors")}
    assert drawn == expected | {"validation.png"}

    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(sys, "argv", ["agoplight", "report", str(tmp_path / "empty")])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "not a run folder" in error
    assert "metrics.csv" in error and "agop/step_*.pt" in error and "Traceback" not in error


def test_pictures_load_in_chromium(browser, network_report, rfm_report, rfm_digits_report, tmp_path):
    with Chromium(browser, tmp_path / "profile") as chromium:
        for report in (network_report, rfm_report, rfm_digits_report):
            images, requests = chromium.open(report.index)

            assert len(images) == len(report.images) > 0
            for image in images:
                assert image["complete"] and image["naturalWidth"] > 0, image
                width, height = _png_size(report.index.parent / image["src"])
                assert (image["naturalWidth"], image["naturalHeight"]) == (width, height)
            assert requests and all(url.startswith("file://") for url in requests), requests


# ---- helpers ---------------------------------------------------------------------------------------------------


def _image_sources(page: str) -> set[str]:
    return set(re.findall(r"<img src='([^']+)'", page))


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


class Chromium:
    """Headless Chromium driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``: commands on
    the browser's fd 3, replies on its fd 4), so no port is opened and no driver is needed."""

    def __init__(self, binary: str, profile: Path) -> None:
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()

        def pipes_as_fd_3_and_4() -> None:  # in the child: copies above 4 first, so that no end overwrites another
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 5) for fd in (commands_read, replies_write)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        command = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"]
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,  # os.pipe() ends are not inheritable; only the dup2'd fds 3 and 4 pass on
            preexec_fn=pipes_as_fd_3_and_4,
        )
        os.close(commands_read)
        os.close(replies_write)
        self._buffer = b""
        self._id = 0
        self.events: list[dict] = []

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):  # the browser may be gone already
            self.send("Browser.close", timeout=10)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._commands)
        os.close(self._replies)

    def open(self, page: Path, timeout: float = 60) -> tuple[list[dict], list[str]]:
        """Load ``page`` in a new tab; its images' state after the load event, and every URL it requested."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Network.enable", session=session)
        self.send("Page.enable", session=session)
        self.events.clear()
        self.send("Page.navigate", {"url": page.as_uri()}, session=session)
        self._wait_for("Page.loadEventFired", session, timeout)

        expression = (
            "JSON.stringify(Array.from(document.images, i => ({src: i.getAttribute('src'), complete: i.complete, "
            "naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight})))"
        )
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session)
        requests = [
            event["params"]["request"]["url"]
            for event in self.events
            if event.get("method") == "Network.requestWillBeSent" and event.get("sessionId") == session
        ]
        self.send("Target.closeTarget", {"targetId": target})
        return json.loads(result["result"]["value"]), requests

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._next(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def _wait_for(self, method: str, session: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method and e.get("sessionId") == session for e in self.events):
            self.events.append(self._next(deadline))

    def _next(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._replies], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._replies, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)
