"""Operator tools through `sidecar up`: `sidecar jobs` and the admin dead-letter API.

The re-drive of a real failed job is in tests/integration/test_dead_letters.py (Triton
stopped past the retry budget, then re-driven once it is back)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.stack import Stack, new_stack, run_cli, stack_root
from tests.otlp_receiver import OtlpReceiver


@pytest.fixture(scope="module")
def otlp() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def stack(otlp: OtlpReceiver) -> Iterator[Stack]:
    """This module's own stack: it exports its traces to a real OTLP receiver (the standard
    OTEL_EXPORTER_OTLP_ENDPOINT variable, as an operator would set it), and its tests count
    every dead letter and every facility of the stack."""
    patch = pytest.MonkeyPatch()
    patch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint)
    try:
        with stack_root() as root:
            running = new_stack(root)
            try:
                running.start()
                yield running
            finally:
                running.stop()
    finally:
        patch.undo()


def test_jobs_failed_lists_and_redrive_needs_a_selection(stack: Stack) -> None:
    # the operator credential `sidecar up` made in its data dir
    target = ["--target", stack.address("workflow"), "--data-dir", str(stack.data_dir)]
    listed = run_cli("jobs", "failed", *target)
    assert listed.returncode == 0, listed.stderr
    assert "0 failed jobs" in listed.stderr
    refused = run_cli("jobs", "redrive", "--operator", "ops1", *target)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "sidecar jobs: error: name dead letters by sequence, facility or kind"]
    nothing = run_cli("jobs", "discard", "999999", "--reason", "test", "--operator", "ops1",
                      *target)
    assert nothing.returncode == 1 and "discarded: none" in nothing.stdout


def test_jobs_on_an_unreachable_target_say_so_in_one_line(stack: Stack) -> None:
    done = run_cli("jobs", "failed", "--target", "127.0.0.1:1")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "sidecar jobs: error: cannot reach the workflow service at 127.0.0.1:1 "
        "(connection refused); is 'sidecar up' running?"]


def test_admin_dead_letter_api(stack: Stack) -> None:
    with stack.client() as http:
        listed = http.get("/api/v1/admin/dead-letters")
        assert listed.status_code == 200, listed.text
        assert listed.json() == {"dead_letters": [], "next_page_token": ""}
        empty = http.post("/api/v1/admin/dead-letters/redrive", json={})
        assert empty.status_code == 400
        assert empty.json()["error"]["reason"] == "FILTER_REQUIRED"
        no_reason = http.post("/api/v1/admin/dead-letters/discard", json={"kind": "ai_run"})
        assert no_reason.status_code == 400
        assert no_reason.json()["error"]["reason"] == "REASON_REQUIRED"
    done = stack.cli("user", "add", "ops_rad", "--role", "radiologist", "--facility",
                     "acc_north", "--password-stdin", stdin="radiologist pass phrase\n")
    assert done.returncode == 0, done.stderr
    token = stack.login("ops_rad", "radiologist pass phrase")
    with stack.client(token) as http:
        assert http.get("/api/v1/admin/dead-letters").status_code == 403
        assert http.post("/api/v1/admin/dead-letters/redrive",
                         json={"kind": "ai_run"}).status_code == 403


def test_every_service_serves_prometheus_metrics(stack: Stack) -> None:
    """Scraped and parsed with prometheus-client's own parser; an instance sent over DICOMweb
    shows in ingest's volume counter."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    from tests.acceptance.test_dicomweb_up import CT_SMALL, _multipart

    with open(CT_SMALL, "rb") as fh:
        body, content_type = _multipart([fh.read()])
    with stack.client() as http:
        assert http.post("/dicomweb/studies?facility=acc_south", content=body,
                         headers={"Content-Type": content_type}).status_code == 200
    names: dict[str, set[str]] = {}
    for service in ("workflow", "ingest", "preprocess", "normalizer"):
        text = httpx.get(f"http://{stack.address(service + '-metrics')}/metrics", timeout=30).text
        names[service] = {f.name for f in text_string_to_metric_families(text)}
    gateway = httpx.get(f"{stack.base_url}/metrics", timeout=30)
    assert gateway.status_code == 200
    names["gateway"] = {f.name for f in text_string_to_metric_families(gateway.text)}
    assert "sidecar_gateway_requests" in names["gateway"]
    assert {"sidecar_queue_depth", "sidecar_eligibility_decisions"} <= names["workflow"]
    assert "sidecar_inference_seconds" in names["normalizer"]
    ingest = httpx.get(f"http://{stack.address('ingest-metrics')}/metrics", timeout=30).text
    stored = [s for f in text_string_to_metric_families(ingest)
              if f.name == "sidecar_ingest_instances" for s in f.samples
              if s.name == "sidecar_ingest_instances_total"
              and s.labels == {"facility": "acc_south", "source": "grpc", "outcome": "stored"}]
    assert stored and stored[0].value >= 1


def test_dashboard_draws_its_charts_in_chromium(stack: Stack, tmp_path_factory) -> None:
    """The admin page in a real browser: log in, every service up, the charts drawn."""
    from playwright.sync_api import sync_playwright

    from tests.acceptance.browser import ARTIFACTS, launch

    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{stack.base_url}/admin/")
            page.get_by_label("Username").fill(stack.admin)
            page.get_by_label("Password").fill(stack.password)
            page.get_by_role("button", name="Log in").click()
            services = page.get_by_role("table", name="Services")
            services.get_by_text("normalizer").wait_for()
            assert services.get_by_text("down").count() == 0
            figures = page.locator("figure")
            assert figures.count() == 9
            volume = page.get_by_role("figure", name="Ingest volume (facility / adapter / outcome)")
            assert int(volume.get_attribute("data-bars") or 0) >= 1
            page.get_by_role("table", name="Failed jobs").wait_for()
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "admin-dashboard.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()


def test_facility_check_walks_a_study_through_every_stage(stack: Stack) -> None:
    done = stack.cli("facility", "check", "acc_north", "--kind", "chest-ct", timeout=600)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0, done.stdout + done.stderr
    stages = [line.split(":", 1)[0] for line in lines]
    assert stages == ["PASS facility", "PASS dicom echo", "PASS send chest-ct",
                      "PASS eligibility", "PASS assets", "PASS model chest_ct_nodules",
                      "PASS findings", "SKIP export", "SKIP handoff"], lines


def test_facility_check_names_the_stage_that_fails(stack: Stack) -> None:
    assert stack.cli("facility", "add", "acc_mammo_only").returncode == 0
    assert stack.cli("facility", "set", "acc_mammo_only", "--models",
                     "mammo_masses").returncode == 0
    done = stack.cli("facility", "check", "acc_mammo_only", "--kind", "chest-ct", timeout=600)
    assert done.returncode == 1
    lines = done.stdout.strip().splitlines()
    assert "SKIP dicom echo: no AE title set; test studies go over the Ingest RPC" in lines
    [failed] = [line for line in lines if line.startswith("FAIL")]
    assert failed.startswith("FAIL eligibility: ineligible: ")
    unknown = stack.cli("facility", "check", "nowhere")
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines()[-1] == (
        "sidecar facility check: error: no facility named 'nowhere'; add it with "
        "'sidecar facility add nowhere'")


def test_service_logs_are_json_lines_without_patient_names(stack: Stack) -> None:
    """Runs last in this module: by now the stack has stored CT_small.dcm (patient
    CompressedSamples^CT1) and the facility check's studies (SIDECAR^CHECK)."""
    import json

    logs = stack.data_dir / "logs"
    seen: dict[str, int] = {}
    for service in ("workflow", "ingest", "preprocess", "normalizer", "gateway"):
        text = (logs / f"{service}.log").read_text(errors="replace")
        for name in ("CompressedSamples", "SIDECAR^CHECK", "CHECK^SIDECAR"):
            assert name not in text, (service, name)
        for line in text.splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                assert {"ts", "level", "service", "message"} <= entry.keys()
                seen[service] = seen.get(service, 0) + 1
    assert {"workflow", "ingest", "preprocess", "normalizer", "gateway"} <= seen.keys(), seen


def test_one_study_is_one_trace_across_the_services(stack: Stack, otlp: OtlpReceiver) -> None:
    """After the facility check's chest CT: one trace holds the study's completion in ingest,
    the workflow's steps, the preprocess job and the AI run (trace context carried in the
    outbox and the NATS headers); a gateway request's trace reaches the workflow over gRPC."""
    import time

    with stack.client() as http:
        assert http.get("/api/v1/studies").status_code == 200
    wanted = {"ingest_svc", "workflow_svc", "preprocess", "normalizer_svc"}
    deadline = time.monotonic() + 30
    best: set[str] = set()
    gateway_to_workflow = False
    while time.monotonic() < deadline:
        for spans in otlp.traces().values():
            services = {s.service for s in spans}
            if "study.complete" in {s.name for s in spans} and len(services) > len(best):
                best = services
            gateway_to_workflow |= {"review_gateway", "workflow_svc"} <= services
        if wanted <= best and gateway_to_workflow:
            break
        time.sleep(0.5)
    assert wanted <= best, best
    assert gateway_to_workflow


def test_review_analytics_for_auditors_json_csv_and_page(stack: Stack, tmp_path: Path) -> None:
    """Decisions made through the review API on a chest CT with two findings show in the
    auditor's analytics (JSON, CSV) and on the analytics page in Chromium. The CT is sent here:
    the facility check's own takes its seed from the clock, and some of those have one finding."""
    import csv
    import io
    import json
    import time

    from playwright.sync_api import sync_playwright

    from tests.acceptance.browser import ARTIFACTS, launch

    for name, role, extra in (("ana_rad", "radiologist", ["--facility", "acc_north"]),
                              ("ana_aud", "auditor", [])):
        done = stack.cli("user", "add", name, "--role", role, *extra, "--password-stdin",
                         stdin="analytics pass phrase\n")
        assert done.returncode == 0, done.stderr
    folder = tmp_path / "ct"
    assert run_cli("synth", str(folder), "--kind", "chest-ct", "--seed", "11").returncode == 0
    sent = stack.cli("ingest", str(folder), "--facility", "acc_north", "--target",
                     stack.address("ingest"), "--complete")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    accession = json.loads((folder / "ground_truth.json").read_text())["accession_number"]
    with stack.client(stack.login("ana_rad", "analytics pass phrase")) as rad:
        deadline, study = time.monotonic() + 300, None
        while study is None and time.monotonic() < deadline:
            rows = rad.get("/api/v1/studies", params={"accession": accession}).json()["studies"]
            if rows and rows[0]["state"] == "ready_for_review":
                study = rows[0]
            time.sleep(0.5)
        assert study is not None, f"study {accession} not ready_for_review"
        findings = rad.get(f"/api/v1/studies/{study['id']}/findings").json()["findings"]
        assert len(findings) >= 2
        decisions = f"/api/v1/studies/{study['id']}/findings/{{}}/decisions"
        first, second = findings[0], findings[1]
        assert rad.post(decisions.format(first["id"]), json={
            "action": "accept", "expected_version": first["version"]}).status_code == 200
        assert rad.post(decisions.format(second["id"]), json={
            "action": "reject", "reason": "false_positive",
            "expected_version": second["version"]}).status_code == 200
        assert rad.get("/api/v1/analytics").status_code == 403
    with stack.client(stack.login("ana_aud", "analytics pass phrase")) as aud:
        data = aud.get("/api/v1/analytics", params={"facility": "acc_north"}).json()
        [model] = [r for r in data["rates"] if r["dimension"] == "model"]
        assert model["value"].startswith("chest_ct_nodules")
        assert (model["reviewed"], model["accepted"], model["rejected"]) == (2, 1, 1)
        exported = aud.get("/api/v1/analytics/rates.csv", params={"facility": "acc_north"})
        assert exported.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert {"dimension": "facility", "value": "acc_north", "reviewed": "2",
                "accepted": "1", "edited": "0", "rejected": "1", "ignored": "0"} in rows
        assert aud.get("/api/v1/analytics/nothing.csv").status_code == 404
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{stack.base_url}/admin/analytics")
            page.get_by_label("Username").fill("ana_aud")
            page.get_by_label("Password").fill("analytics pass phrase")
            page.get_by_role("button", name="Log in").click()
            rates = page.get_by_role("table", name="Decision rates")
            rates.get_by_text("acc_north").wait_for()
            chart = page.get_by_role("figure", name="Acceptance rate by model version")
            assert int(chart.get_attribute("data-bars") or 0) >= 1
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "review-analytics.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()


def test_facility_onboarding_api_validates_every_setting(stack: Stack) -> None:
    with stack.client() as http:
        bad = http.post("/api/v1/admin/facilities", json={
            "name": "acc_onboard", "settings": {"quiet_period_s": 99999}})
        assert bad.status_code == 400
        assert bad.json()["error"]["message"] == (
            "quiet_period_s: must be between 0 and 3600 seconds")
        unknown = http.post("/api/v1/admin/facilities", json={
            "name": "acc_onboard", "settings": {"enabled_models": ["no_such_model"]}})
        assert unknown.status_code == 400
        assert unknown.json()["error"]["message"].startswith(
            "enabled_models: not in the model registry: no_such_model")
        typo = http.post("/api/v1/admin/facilities", json={
            "name": "acc_onboard", "settings": {"quiet_perod_s": 3}})
        assert typo.status_code == 400 and "unknown setting(s): quiet_perod_s" in typo.text
        assert http.get("/api/v1/admin/facilities").json()["facilities"][0]["name"] != \
            "acc_onboard"  # nothing was stored by the refused requests
        made = http.post("/api/v1/admin/facilities", json={
            "name": "acc_onboard", "settings": {"ae_title": "ONBOARD_CT", "quiet_period_s": 12,
                                                "enabled_models": ["chest_ct_nodules"]}})
        assert made.status_code == 201, made.text
        assert made.json()["enabled_models"] == ["chest_ct_nodules"]
        taken = http.patch("/api/v1/admin/facilities/acc_south",
                           json={"settings": {"ae_title": "ONBOARD_CT"}})
        assert taken.status_code == 409
        assert taken.json()["error"]["reason"] == "AE_TITLE_TAKEN"
        changed = http.patch("/api/v1/admin/facilities/acc_onboard",
                             json={"settings": {"shadow_mode": True}})
        assert changed.status_code == 200 and changed.json()["shadow_mode"] is True
        assert http.patch("/api/v1/admin/facilities/nowhere",
                          json={"settings": {"shadow_mode": True}}).status_code == 404
    listed = stack.cli("facility", "list").stdout
    assert "acc_onboard\tae=ONBOARD_CT\tshadow=on\tquiet=12s\tmodels=chest_ct_nodules" in listed
    # The new facility's AE title is usable at once: its C-ECHO is accepted.
    echo = stack.cli("facility", "check", "acc_onboard", "--kind", "mammo", timeout=600)
    assert "PASS dicom echo" in echo.stdout
    assert "FAIL eligibility: ineligible" in echo.stdout  # chest CT only: a mammogram is not


def test_facility_page_adds_a_facility_and_shows_a_precise_error(stack: Stack) -> None:
    from playwright.sync_api import sync_playwright

    from tests.acceptance.browser import launch

    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{stack.base_url}/admin/")
            page.get_by_label("Username").fill(stack.admin)
            page.get_by_label("Password").fill(stack.password)
            page.get_by_role("button", name="Log in").click()
            facilities = page.get_by_role("table", name="Facilities")
            facilities.get_by_role("cell", name="acc_north", exact=True).wait_for()
            form = page.get_by_role("form", name="Facility settings")
            form.get_by_label("Facility name").fill("acc_page")
            form.get_by_label("Settings to set").fill("quiet_period_s=-1")
            form.get_by_role("button", name="Add facility").click()
            page.get_by_text("not saved: quiet_period_s: must be between 0 and 3600 seconds")\
                .wait_for()
            form.get_by_label("Settings to set").fill("quiet_period_s=20\nshadow_mode=true")
            form.get_by_role("button", name="Add facility").click()
            page.get_by_text("added: acc_page").wait_for()
            facilities.get_by_role("cell", name="acc_page", exact=True).wait_for()
            # retention (docs/operations.md): a number of days, refused precisely when not one
            form.get_by_label("Settings to set").fill("retention_days=0")
            form.get_by_role("button", name="Change facility").click()
            page.get_by_text("not saved: retention_days: a whole number of days, 1 to 36500")\
                .wait_for()
            form.get_by_label("Settings to set").fill("retention_days=400\n"
                                                      "report_retention_days=30")
            form.get_by_role("button", name="Change facility").click()
            page.get_by_text("changed: acc_page").wait_for()
            row = facilities.get_by_role("row").filter(
                has=page.get_by_role("cell", name="acc_page", exact=True))
            row.get_by_role("cell", name="400", exact=True).wait_for()
            header = [h.strip() for h in facilities.locator("thead th").all_inner_texts()]
            cells = row.get_by_role("cell").all_inner_texts()
            assert cells[header.index("retention_days")] == "400"
            assert cells[header.index("report_retention_days")] == "30"
        finally:
            browser.close()
    [(context,)] = stack.sql("select context from audit_events where type = 'facility.updated' "
                             "and facility = 'acc_page' and context->'settings' ? "
                             "'retention_days'")
    assert context["via"] == "api" and context["settings"]["retention_days"] == 400, context
