"""Operations endpoints: liveness, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from factories import book_servable


def decisions_total(metrics_text: str) -> dict[tuple[str, str], float]:
    totals: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "backbeat_decisions":
            for sample in family.samples:
                if sample.name == "backbeat_decisions_total":
                    totals[(sample.labels["result"], sample.labels["reason"])] = sample.value
    return totals


def test_health_metrics_and_openapi(client):
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["servable_line_items"] == 0

    booked = book_servable(client, line_item={"targeting": {"countries": ["US"]}})
    body = client.get("/healthz").json()
    assert body["servable_line_items"] == 1 and body["catalog_version"] >= 5

    before = decisions_total(client.get("/metrics").text)
    slot_id = booked["slot"]["id"]
    assert b"<Ad " in client.get(f"/vast?slot={slot_id}&listener=l&country=US").content
    assert b"<Ad " not in client.get(f"/vast?slot={slot_id}&listener=l&country=FR").content
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "# TYPE backbeat_decisions_total counter" in metrics.text
    after = decisions_total(metrics.text)
    assert after[("fill", "")] == before.get(("fill", ""), 0) + 1
    assert (
        after[("no-fill", "no-targeting-match")]
        == before.get(("no-fill", "no-targeting-match"), 0) + 1
    )
    assert "backbeat_http_requests_total" in metrics.text
    assert 'route="/vast"' in metrics.text  # labelled by route template, not raw path

    spec = client.get("/openapi.json")
    assert spec.status_code == 200
    document = spec.json()
    assert document["openapi"].startswith("3.") and document["info"]["title"] == "Backbeat"
    paths = document["paths"]
    for resource in ("advertisers", "campaigns", "line-items", "creatives", "slots"):
        assert {"get", "post"} <= set(paths[f"/v1/{resource}"]), resource
        assert {"get", "patch"} <= set(paths[f"/v1/{resource}/{{object_id}}"]), resource
        for action in ("pause", "activate", "archive"):
            assert "post" in paths[f"/v1/{resource}/{{object_id}}/{action}"], (resource, action)
    for path, method in [
        ("/vast", "get"),
        ("/v1/decisions", "post"),
        ("/t/{event}", "get"),
        ("/v1/reports/delivery", "get"),
        ("/v1/reports/delivery/run", "post"),
        ("/v1/advertisers/{advertiser_id}/keys", "post"),
        ("/v1/api-keys/{key_id}/revoke", "post"),
        ("/healthz", "get"),
        ("/metrics", "get"),
    ]:
        assert method in paths[path], path
    # the documented request shapes name their fields
    schemas = document["components"]["schemas"]
    assert {"name", "start_at", "end_at", "total_budget"} <= set(
        schemas["CampaignCreate"]["properties"]
    )
    assert "targeting" in schemas["LineItemCreate"]["properties"]


def test_readiness_is_a_problem_naming_what_is_down(client):
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert {name: check["status"] for name, check in ready.json()["checks"].items()} == {
        "database": "up",
        "event_log": "up",
    }
    client.app.state.services.event_log.close()  # the writer thread stops: no durable appends
    down = client.get("/readyz")
    assert down.status_code == 503
    assert down.headers["content-type"] == "application/problem+json"
    body = down.json()
    assert (body["status"], body["reason"], body["detail"]) == (503, "not-ready", "down: event_log")
    assert body["checks"]["event_log"] == {
        "status": "down",
        "seconds": body["checks"]["event_log"]["seconds"],
        "error": "RuntimeError",
    }
    assert body["checks"]["database"]["status"] == "up"
