"""GET /metrics (Prometheus text, admin token unless public) and one JSON log line per request."""
from __future__ import annotations

import http.client
import json
import logging
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from src.app import App
from src.config import Config
from tests.conftest import AppFactory
from tests.support import Client, LiveServer, ProdServer, scrape


def test_metrics_count_requests_by_route_and_show_the_platform(app: App, client: Client,
                                                               base_image: dict) -> None:
    vm = client.post("/v1/vms", {"name": "m1", "cpu": 1, "ram": 128, "image_name": "base"}).body
    client.wait_task(vm["task"]["id"])
    for _ in range(3):
        client.get(f"/v1/vms/{vm['id']}")
    client.get("/v1/vms/nope")
    Client(app, token=None).get("/v1/vms")
    samples = scrape(app)
    show = (("method", "GET"), ("route", "/v1/vms/{vm}"), ("status", "200"))
    assert samples[("iaas_http_requests_total", show)] == 3
    assert samples[("iaas_http_requests_total", (("method", "GET"), ("route", "/v1/vms/{vm}"),
                                                 ("status", "404")))] == 1
    assert samples[("iaas_http_requests_total", (("method", "GET"), ("route", "/v1/vms"),
                                                 ("status", "401")))] == 1
    assert samples[("iaas_http_request_duration_seconds_count", show)] == 3
    assert samples[("iaas_vms", (("status", "running"),))] == 1
    assert samples[("iaas_tasks", (("action", "create"), ("result", "succeeded")))] == 1
    assert samples[("iaas_libvirt_up", ())] == 1


def test_task_latency_is_a_histogram_by_phase_action_and_executor(
        app: App, client: Client, base_image: dict) -> None:
    vm = client.post("/v1/vms", {"name": "m1", "cpu": 1, "ram": 128, "image_name": "base"}).body
    client.wait_task(vm["task"]["id"])
    client.wait_task(client.post(f"/v1/vms/{vm['id']}/stop", {}).body["id"])
    with app.db.read() as conn:
        started, finished, created = conn.execute(
            "SELECT started_at, finished_at, created_at FROM tasks WHERE action = 'create'"
        ).fetchone()
    ran = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    samples = scrape(app)
    create = (("action", "create"), ("executor", "inprocess"))
    for phase in ("queued", "running"):
        labels = tuple(sorted((*create, ("phase", phase))))
        assert samples[("iaas_task_latency_seconds_count", labels)] == 1
        assert samples[("iaas_task_latency_seconds_bucket", tuple(sorted(
            (*labels, ("le", "+Inf")))))] == 1
    running = tuple(sorted((*create, ("phase", "running"))))
    assert samples[("iaas_task_latency_seconds_sum", running)] == pytest.approx(ran, abs=0.01)
    # Cumulative: the run is in every bucket from the first one at or above it.
    buckets = sorted((float(dict(labels)["le"]), value) for (name, labels), value
                     in samples.items() if name == "iaas_task_latency_seconds_bucket"
                     and set(running) <= set(labels))
    assert [value for le, value in buckets] == [1 if le >= ran else 0 for le, _ in buckets]
    stop = tuple(sorted((("action", "stop"), ("executor", "inprocess"), ("phase", "running"))))
    assert samples[("iaas_task_latency_seconds_count", stop)] == 1
    assert samples[("iaas_outbox_unpublished", ())] == 0
    assert not [name for name, _ in samples if name == "iaas_queue_depth"]  # no broker here
    assert datetime.fromisoformat(created) <= datetime.fromisoformat(started)


def test_one_json_line_per_request(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="iaas.api")
    reply = client.get("/v1/flavors")
    lines = [json.loads(record.getMessage()) for record in caplog.records
             if record.name == "iaas.api"]
    assert lines[-1] == {"event": "request", "method": "GET", "path": "/v1/flavors",
                         "route": "/v1/flavors", "status": 200,
                         "duration_ms": lines[-1]["duration_ms"],
                         "request_id": reply.headers["X-Request-Id"], "project": "default"}
    assert isinstance(lines[-1]["duration_ms"], float)


def test_metrics_need_an_admin_unless_made_public(make_app: AppFactory, config: Config) -> None:
    app = make_app(config)
    member = app.tokens.issue("team-a", "member")[1]
    assert Client(app, token=None).get("/metrics").status == 401
    assert Client(app, token=member).get("/metrics").status == 403
    assert Client(app).get("/metrics").status == 200
    public = make_app(replace(config, metrics_public=True))
    assert Client(public, token=None).get("/metrics").status == 200


def test_health_shows_failures_in_detail_only_to_admins(make_app: AppFactory, config: Config,
                                                        tmp_path: Path) -> None:
    app = make_app(replace(config, libvirt_uri=f"test://{tmp_path}/gone.xml"))
    anonymous = Client(app, token=None).get("/healthz")
    assert anonymous.status == 503
    assert anonymous.body == {"status": "degraded", "db": "ok", "libvirt": "error"}
    member = Client(app, token=app.tokens.issue("team-a", "member")[1]).get("/healthz").body
    assert member["libvirt"] == "error"
    admin = Client(app).get("/healthz").body
    assert admin["libvirt"].startswith("error: ") and "gone.xml" in admin["libvirt"]


def _call(port: int, method: str, path: str, token: str | None = None) -> tuple[int, str]:
    """(status, body) of one call over HTTP, with token or none at all."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, headers={"Authorization": f"Bearer {token}"}
                           if token else {})
        answer = connection.getresponse()
        return answer.status, answer.read().decode()
    finally:
        connection.close()


@pytest.mark.parametrize("kind", ["in-process", "wsgiref", "waitress"])
def test_refusals_are_counted_after_an_authenticated_request(app: App, kind: str) -> None:
    """The outside suite's sequence: GET /v1/events with a token, then 20 anonymous DELETE
    /v1/vms/x; each 401 is an iaas_unauthorized_requests_total too, on every server."""
    member = app.tokens.issue("team-a", "member")[1]
    if kind == "in-process":
        assert Client(app, token=member).get("/v1/events").status == 200
        statuses = [Client(app, token=None).delete("/v1/vms/x").status for _ in range(20)]
        text = Client(app).get("/metrics").body
    else:
        live = LiveServer(app) if kind == "wsgiref" else ProdServer(app)
        try:
            assert _call(live.port, "GET", "/v1/events", member)[0] == 200
            statuses = [_call(live.port, "DELETE", "/v1/vms/x")[0] for _ in range(20)]
            status, text = _call(live.port, "GET", "/metrics", live.token)
            assert status == 200
        finally:
            live.stop()
    assert statuses == [401] * 20
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(text) for sample in family.samples}
    refused = (("method", "DELETE"), ("route", "/v1/vms/{vm}"), ("status", "401"))
    assert samples[("iaas_http_requests_total", refused)] == 20
    assert samples[("iaas_unauthorized_requests_total", (("route", "/v1/vms/{vm}"),))] == 20
