"""The Airflow UI of `recops up`, tried in a real browser (Debian's Chromium driven by Playwright).

The platform starts through the `recops up` command on tiny settings (no champion, so no
service). In the browser: sign in with the generated password, open `recops_pipeline` from the
Dags list, trigger it from the trigger form with the `epochs` Param changed, wait until the grid
shows every task and the run in success, open the `train` task's log and find the task's own
output there. A screenshot goes to the test's tmp folder (docs/img/airflow-ui.png is a copy of
one). Then `recops down`: no process left.

The full run waits ~10 min for the pipeline: it is marked slow. The default run keeps a fast
check of the same UI path: sign in, the trigger form's Param reaches the run it starts (that run
is then stopped, not waited for).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from recops.compliance.chromium import chromium
from recops.core.processes import members
from recops.core.supervisor import free_port
from recops.orchestration import platform_state
from recops.orchestration.pipeline import safe_run_id
from tests.dags.tiny import tiny_settings
from tests.orchestration.platform_cli import recops, running

pytestmark = pytest.mark.integration
TASKS = ("ingest", "validate", "features", "train", "evaluate", "gate", "register", "report")
EPOCHS = 3  # set in the trigger form; the tiny settings train 10
UI_TIMEOUT_MS = 120_000  # one page or click on two busy cores
RUN_TIMEOUT_S = 1500.0  # the whole pipeline on tiny settings: 9 min at load 7-8 on 2 cores


def _browser_or_skip() -> str:
    exe = chromium()
    if exe is not None:
        return exe
    msg = ("Chromium is not installed (Debian's `chromium` package; `make test` installs it "
           "through scripts/test-deps.sh)")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg + " -- CI=true: the browser test must run")
    pytest.skip(msg)





@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`recops up` on tiny settings (synthetic data, a one-layer model); `recops down` after."""
    exe = _browser_or_skip()
    home = tmp_path_factory.mktemp("ui") / "home"
    settings = tiny_settings(home, **{"serving.workers": 1, "platform.parallelism": 1})
    config = settings.save(home.parent / "recops.yaml")
    started = recops(config, "up", "--airflow-port", free_port())
    state = platform_state.platform_state(settings)
    assert started.returncode == 0 and state is not None, started.stdout + started.stderr
    procs = [p for rec in state.procs.values() for p in members(rec)]
    try:
        yield {"settings": settings, "state": state, "chromium": exe, "up": started.stdout}
    finally:
        procs += [p for rec in state.procs.values() for p in members(rec)]  # workers since
        down = recops(config, "down")
    assert down.returncode == 0 and "recops is down" in down.stdout, down.stdout + down.stderr
    assert running(procs) == []


def _api(state: platform_state.PlatformState, path: str, method: str = "GET",
         body: dict[str, Any] | None = None) -> Any:
    user, password = state.login()
    token = httpx.post(state.ui_url + "auth/token", json={"username": user,
                                                          "password": password},
                       timeout=30).json()["access_token"]
    got = httpx.request(method, f"{state.api_url}/{path}", json=body,
                        headers={"Authorization": f"Bearer {token}"}, timeout=30)
    got.raise_for_status()
    return got.json()


def _sign_in_and_trigger(page: Any, state: platform_state.PlatformState, user: str,
                         password: str) -> str:
    """Sign in (a wrong password refused first), open recops_pipeline from the Dags list and
    trigger it from the trigger form with ``epochs`` changed; the new run's id."""
    from playwright.sync_api import expect

    page.set_default_timeout(UI_TIMEOUT_MS)
    expect.set_options(timeout=UI_TIMEOUT_MS)

    # 1. Sign in: a wrong password is refused, the generated one lets us in.
    page.goto(state.ui_url)
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("Invalid credentials")).to_be_visible()
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()

    # 2. recops_pipeline from the Dags list.
    page.get_by_role("link", name="Dags", exact=True).click()
    page.get_by_role("link", name="recops_pipeline", exact=True).click()
    page.wait_for_url("**/dags/recops_pipeline")
    expect(page.get_by_role("link", name="Overview")).to_be_visible()

    # 3. The trigger form: the Params are there; epochs changed.
    page.get_by_role("button", name="Trigger Dag").click()
    form = page.get_by_role("dialog")
    expect(form.get_by_text("Trigger Dag - recops_pipeline")).to_be_visible()
    for param in ("dataset", "mode", "dp", "epochs"):
        expect(form.get_by_text(param, exact=True)).to_be_visible()
    form.get_by_label("epochs", exact=True).fill(str(EPOCHS))
    form.get_by_role("button", name="Trigger", exact=True).click()
    page.wait_for_url("**/dags/recops_pipeline/runs/*")
    return str(page.url.rsplit("/runs/", 1)[1])


@pytest.mark.timeout(900)
def test_sign_in_and_trigger_from_the_form_starts_a_run_with_its_param(
        up: dict[str, Any]) -> None:
    """The fast check: what the form was given is the conf of the run it started."""
    from playwright.sync_api import sync_playwright

    state = up["state"]
    user, password = state.login()
    assert password in up["up"]  # the login `recops up` printed is the one that signs in
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=up["chromium"], args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            run_id = _sign_in_and_trigger(page, state, user, password)
        finally:
            browser.close()
    path = f"dags/recops_pipeline/dagRuns/{run_id}"
    try:
        run = _api(state, path)
        assert run["run_type"] == "manual" and run["conf"]["epochs"] == EPOCHS, run
    finally:
        # Not waited for: stopped, so that the full test's run does not queue behind it.
        _api(state, path, "PATCH", {"state": "failed"})


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_trigger_the_pipeline_from_the_ui_and_read_a_task_log(up: dict[str, Any],
                                                              tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    state, settings = up["state"], up["settings"]
    user, password = state.login()
    assert password in up["up"]  # the login `recops up` printed is the one that signs in
    screenshot = tmp_path / "airflow-ui.png"  # tests write no tracked file
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=up["chromium"], args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            # 1-3. Sign in, recops_pipeline from the Dags list, triggered from its form.
            run_id = _sign_in_and_trigger(page, state, user, password)

            # 4. The grid: every task of this run, then the run, in success.
            deadline = time.monotonic() + RUN_TIMEOUT_S
            header = page.get_by_test_id("header-card")
            while not header.get_by_text("Success", exact=True).is_visible():
                failed = header.get_by_text("Failed", exact=True)
                assert not failed.is_visible(), _api(state, f"dags/recops_pipeline/dagRuns/"
                                                            f"{run_id}/taskInstances")
                assert time.monotonic() < deadline, f"run {run_id} not done in time"
                page.wait_for_timeout(5000)
            for task in TASKS:  # a cell's tooltip covers the cell below: away, then on
                page.mouse.move(900, 700)
                expect(page.get_by_role("tooltip")).to_have_count(0)
                page.get_by_test_id(f"grid-{run_id}-{task}").hover()
                tip = page.get_by_role("tooltip").filter(has_text=f"Task ID: {task}")
                expect(tip).to_contain_text("State: Success")

            # 5. The train task's log (from its grid cell) shows its real output.
            page.get_by_test_id(f"grid-{run_id}-train").click()
            page.wait_for_url(f"**/runs/{run_id}/tasks/train")
            run_dir = settings.paths.runs / safe_run_id(run_id)
            # run_stage's return value, logged by the task: the run directory it trained in.
            line = page.get_by_text(f"Returned value was: {{'run_dir': '{run_dir}'")
            expect(line).to_be_visible()
            page.mouse.move(900, 700)  # no tooltip over the grid in the screenshot
            expect(page.get_by_role("tooltip")).to_have_count(0)
            page.screenshot(path=str(screenshot))
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000

    # What the UI showed is what happened: the form's Param reached the run and its training.
    run = _api(state, f"dags/recops_pipeline/dagRuns/{run_id}")
    assert run["state"] == "success" and run["conf"]["epochs"] == EPOCHS, run
    trained = json.loads((run_dir / "train.json").read_text())
    assert 1 <= trained["epochs_run"] <= EPOCHS, trained
