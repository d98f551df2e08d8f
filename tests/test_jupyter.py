"""Jupyter as a user meets it, on the tiny pipeline of the session (``tiny_pipeline``, conftest).

- Every notebook (the four stages and ``explore.py``) runs "Run All" in a kernel started in
  ``notebooks/``, as JupyterLab starts it, with its default parameters: it finds the project,
  reads the default run's inputs, writes only under ``outputs/scratch/`` (``dvc status`` stays
  clean) and computes what the pipeline computed (same checkpoint bytes, probes, metrics). So does
  the report's executed copy re-run from ``outputs/notebooks/`` (its ``out_dir`` is redirected).
- A JupyterLab server (``make lab``'s flags) on 127.0.0.1 serves ``notebooks/pretrain.py`` as a
  notebook through jupytext's contents manager and makes its notebook viewer the default for it.
- ``report.html`` in headless Chromium (Debian's ``chromium``): every figure decodes, every table
  renders, and no request leaves the file (a control page with external links must be caught).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import jupytext
import pytest
from nbclient import NotebookClient

from conftest import REPO, TINY, dvc

NOTEBOOKS = ["cohort", "pretrain", "evaluate", "report", "explore"]
RUN = "anatcl_global-s0"  # the default parameters' run
SETUP = "sudo apt-get install -y chromium  (Debian; README, 'Explore in JupyterLab')"


def run_all(path: Path) -> dict:
    """Execute a notebook as JupyterLab's Run All does: a kernel whose cwd is the notebook's folder."""
    notebook = jupytext.read(path)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return notebook


def _outputs(notebook: dict, mime: str) -> list[str]:
    return [o["data"][mime] for c in notebook.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if mime in o.get("data", {})]


@pytest.mark.slow
def test_every_notebook_runs_all_from_notebooks_folder(tiny_pipeline, monkeypatch):
    root, env, _ = tiny_pipeline
    monkeypatch.setenv("PYTHONPATH", str(root))  # the workspace's library, as `pip install -e .` gives
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.delenv("ANATCL_WRITE_OUTPUTS", raising=False)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    shutil.rmtree(root / "outputs/scratch", ignore_errors=True)
    before = {p: p.stat().st_mtime_ns for p in (root / "outputs").rglob("*") if p.is_file()}
    # training's bytes depend on its thread count (anatcl_core.cores): the pretrain notebook gets the
    # stage's recorded count; every other notebook runs as Jupyter runs it, on all the cores (`auto`),
    # and must still give the stage's bytes (issue 24)
    threads = json.loads((root / f"outputs/pretrain/{RUN}/dvclive/metrics.json").read_text())["threads"]
    executed = {}
    for name in NOTEBOOKS:
        if name == "pretrain":
            monkeypatch.setenv("ANATCL_NUM_THREADS", str(threads))
        else:
            monkeypatch.delenv("ANATCL_NUM_THREADS", raising=False)
        executed[name] = run_all(root / "notebooks" / f"{name}.py")
    shutil.rmtree(root / "outputs/scratch/report")
    run_all(root / "outputs/notebooks/report.ipynb")  # an executed copy: its out_dir is the stage's

    scratch, outputs = root / "outputs/scratch", root / "outputs"
    assert (scratch / "cohort/summary.json").read_text() == (outputs / "cohort/summary.json").read_text()
    assert (scratch / f"pretrain/{RUN}/checkpoint.pt").read_bytes() == (
        outputs / f"pretrain/{RUN}/checkpoint.pt").read_bytes()  # same recipe, seed and data
    assert (scratch / f"evaluate/{RUN}/probes.json").read_text() == (
        outputs / f"evaluate/{RUN}/probes.json").read_text()
    assert (scratch / "report/metrics.json").read_text() == (outputs / "report/metrics.json").read_text()
    assert "<h2>Ablations</h2>" in (scratch / "report/report.html").read_text()
    # nothing the pipeline owns was touched, and DVC agrees
    assert {p: p.stat().st_mtime_ns for p in before if p.exists()} == before
    assert "up to date" in dvc(root, env, "status").lower()

    explore = executed["explore"]
    headline = json.loads((outputs / "report/metrics.json").read_text())
    tables = "\n".join(_outputs(explore, "text/html"))
    assert all(method in tables for method in TINY["pretrain"]["run"]) and "diagnosis BAcc" in tables
    for method, entry in headline.items():  # the report's numbers, to the digits shown
        assert f"{entry['bacc_average']:.3f}".rstrip("0") in tables, method
    assert len(_outputs(explore, "image/png")) >= 3  # seeds spread, per-task points, curves


@pytest.mark.slow
def test_explore_headline_matches_the_report(tiny_pipeline):
    """explore's headline means are the numbers of the report's metrics.json."""
    from anatcl_core.report import explore, results as stage_results

    root = tiny_pipeline.root
    results = stage_results.collect(root / "outputs/evaluate", root / "outputs/pretrain",
                                    stage_results.expected_runs(root / "params.yaml"), root / "outputs/reference",
                                    stage_results.expected_references(root / "params.yaml"))
    table = explore.headline_table(explore.metrics_table(results))
    headline = json.loads((root / "outputs/report/metrics.json").read_text())
    assert set(headline) == set(table.index)  # every method and reference row
    for method, entry in headline.items():
        assert table.loc[method, ("diagnosis BAcc (mean over tasks)", "mean")] == pytest.approx(entry["bacc_average"])
        assert table.loc[method, ("diagnosis BAcc (mean over tasks)", "std")] == pytest.approx(entry["bacc_average_std"])
        assert table.loc[method, ("unseen-site BAcc (leave-one-site-out, mean over tasks)", "mean")] == pytest.approx(
            entry["loso_bacc_mean"])
        if method == "ref_age_sex":  # age itself: no brain-age probe
            assert "brain_age_mae_external" not in entry
            continue
        assert table.loc[method, ("brain-age MAE external", "mean")] == pytest.approx(entry["brain_age_mae_external"])
        assert table.loc[method, ("challenge score", "mean")] == pytest.approx(entry["challenge_score"])
    features = explore.features(root / "outputs/evaluate", "anatcl_global", 0, root / "outputs/cohort/arrays")
    assert features.index.is_unique and {"age", "site", "f0"} <= set(features.columns)
    runs = explore.runs_table(results, root / "outputs/pretrain")
    trained = runs["method"] != "random"  # the random-init floor trains 0 epochs
    assert (runs.loc[trained, "epochs"] == TINY["pretrain"]["epochs"]).all() and (runs.loc[~trained, "epochs"] == 0).all()
    assert all(Path(p).is_file() for p in runs["checkpoint"])


# --- JupyterLab -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str, token: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def _lab_flags() -> list[str]:
    """The flags of ``make lab`` as make expands them for this user (``--allow-root`` as root)."""
    shown = subprocess.run(["make", "-s", "-n", "lab"], cwd=REPO, text=True, capture_output=True, check=True).stdout
    line = next(l for l in shown.splitlines() if "jupyter-lab " in l)
    return line.split()[1:]


def test_jupyterlab_opens_py_sources_as_notebooks(tmp_path):
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),  # no user configuration
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "user"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces")}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", *_lab_flags(), "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "lab.log", "w"))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"jupyter lab exited:\n{(tmp_path / 'lab.log').read_text()[-3000:]}"
            try:
                _get(f"{base}/api/status", token)
                break
            except OSError:
                assert time.monotonic() < deadline, "jupyter lab did not answer within 60 s"
                time.sleep(0.5)
        model = _get(f"{base}/api/contents/notebooks/pretrain.py?type=notebook&content=1", token)
        assert model["type"] == "notebook" and model["format"] == "json"
        cells = model["content"]["cells"]
        assert cells[0]["cell_type"] == "markdown" and "Pretraining" in "".join(cells[0]["source"])
        assert sum("parameters" in c["metadata"].get("tags", []) for c in cells) == 1
        assert model["content"]["metadata"]["jupytext"]["text_representation"]["format_name"] == "percent"
        viewers = _get(f"{base}/lab/api/settings/@jupyterlab/docmanager-extension:plugin", token)
        default = viewers["schema"]["properties"]["defaultViewers"]["default"]  # .jupyter/lab/settings
        assert default["python"] == "Jupytext Notebook" and "defaultViewers" not in viewers["settings"]
        with pytest.raises(urllib.error.HTTPError, match="403"):  # the token is required
            urllib.request.urlopen(f"{base}/api/contents/notebooks", timeout=10)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# --- report.html in a real browser -------------------------------------------------------------


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI: chromium is not installed ({SETUP}; .ci/run does it)")
        pytest.skip(f"chromium not installed: {SETUP}")
    return path


class Page:
    """One headless Chromium tab over the DevTools protocol (websocket-client, no browser download)."""

    def __init__(self, chromium: str, profile: Path) -> None:
        import websocket

        self.browser = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        active, deadline = profile / "DevToolsActivePort", time.monotonic() + 60
        while not (active.exists() and len(active.read_text().split()) == 2):
            assert self.browser.poll() is None and time.monotonic() < deadline, "chromium did not start"
            time.sleep(0.2)
        port = active.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            tab = next(t for t in json.loads(answer.read()) if t["type"] == "page")
        self.socket = websocket.create_connection(tab["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.next_id, self.requests, self.loaded = 0, [], False
        self.call("Network.enable")
        self.call("Page.enable")

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            self._event(message)
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]

    def _event(self, message: dict) -> None:
        if message.get("method") == "Network.requestWillBeSent":
            self.requests.append(message["params"]["request"]["url"])
        elif message.get("method") == "Page.loadEventFired":
            self.loaded = True

    def open(self, url: str) -> None:
        """Navigate and wait for the load event (every image decoded or failed)."""
        self.requests, self.loaded = [], False
        self.call("Page.navigate", url=url)
        while not self.loaded:
            self._event(json.loads(self.socket.recv()))

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"]["value"]

    def close(self) -> None:
        self.socket.close()
        self.browser.terminate()
        try:
            self.browser.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.browser.kill()
            self.browser.wait()


PAGE_STATE = """JSON.stringify({
  images: [...document.images].map(i => ({complete: i.complete, width: i.naturalWidth, height: i.naturalHeight})),
  tables: [...document.querySelectorAll('table')].map(t => ({
      rows: t.querySelectorAll('tbody tr').length, cells: t.querySelectorAll('td').length,
      width: t.getBoundingClientRect().width, height: t.getBoundingClientRect().height})),
  resources: performance.getEntriesByType('resource').map(e => e.name),
})"""


def _leaving(page: Page, url: str, state: dict) -> list[str]:
    """Requests and resource loads other than the page itself and inline data."""
    return [u for u in page.requests + state["resources"] if u != url and not u.startswith("data:")]


@pytest.mark.slow
def test_report_html_in_headless_chromium(tiny_pipeline, tmp_path):
    chromium = _chromium()
    report = tiny_pipeline.root / "outputs/report/report.html"
    source = report.read_text()
    page = Page(chromium, tmp_path / "profile")
    try:
        page.open(report.as_uri())
        state = json.loads(page.evaluate(PAGE_STATE))
        assert len(state["images"]) == source.count("<img") >= 5
        assert all(i["complete"] and i["width"] > 0 and i["height"] > 0 for i in state["images"]), state["images"]
        assert len(state["tables"]) == len(re.findall(r"<table\b", source)) >= 5
        assert all(t["rows"] > 0 and t["cells"] > 0 and t["width"] > 0 and t["height"] > 0 for t in state["tables"])
        assert _leaving(page, report.as_uri(), state) == []
        # control: a page that does reach out, and a figure that does not decode, are caught
        control = tmp_path / "control.html"
        control.write_text(source.replace("</body>", '<img src="http://127.0.0.1:9/x.png">'
                                          '<img src="data:image/png;base64,AAAA"></body>'))
        page.open(control.as_uri())
        state = json.loads(page.evaluate(PAGE_STATE))
        leaving = _leaving(page, control.as_uri(), state)
        assert leaving and set(leaving) == {"http://127.0.0.1:9/x.png"}
        assert sum(i["width"] == 0 for i in state["images"]) == 2
    finally:
        page.close()
