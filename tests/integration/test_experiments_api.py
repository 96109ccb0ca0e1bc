"""Experiments through HTTP: definitions, assignment in GET /similar, POST /events, the report, durability,
a live simulation with a known lift, shadow mode. Real tiny model, real stores (both kinds where cheap)."""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app import cli
from app.encode.encoder import OnnxImageEncoder
from app.experiments.tokens import AttributionTokens
from app.http.app import create_app
from bench import ab_live
from tests.conftest import Catalog, ClientFactory, make_settings, make_store
from tests.factories import photo
from tests.live import live_server

SECRET = "test-events-secret-0123456789"
ITEMS = [f"it-{i}" for i in range(8)]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def index(client: TestClient | httpx.Client, ids: list[str] = ITEMS) -> None:
    items = [{"item_id": item_id, "image_base64": b64(photo(i))} for i, item_id in enumerate(ids)]
    results = client.post("/items/batch", json={"items": items}).json()["results"]
    assert [r["status"] for r in results] == [201] * len(ids)


def served_version(client: TestClient | httpx.Client) -> str:
    return client.get("/info").json()["model_version"]


def design(control: str, treatment: str, unit: str = "user", shadow: bool = False) -> dict:
    return {
        "unit": unit,
        "shadow": shadow,
        "variants": [
            {"name": "control", "model_version": control, "weight": 50},
            {"name": "treatment", "model_version": treatment, "weight": 50},
        ],
    }


@pytest.fixture
def exp_client(client_factory: ClientFactory) -> Iterator[TestClient]:
    with client_factory(events_secret=SECRET) as c:
        index(c)
        yield c


def test_put_get_stop_and_conflicts(exp_client: TestClient) -> None:
    c = exp_client
    v = served_version(c)
    created = c.put("/experiments/exp-a", json=design(v, v))
    assert created.status_code == 201
    assert created.json()["state"] == "running" and created.json()["name"] == "exp-a"
    assert c.put("/experiments/exp-a", json=design(v, v)).status_code == 200  # a repeat changes nothing
    changed = c.put("/experiments/exp-a", json=design(v, v, unit="session"))
    assert changed.status_code == 409 and changed.json()["error"]["code"] == "experiment_conflict"
    second = c.put("/experiments/exp-b", json=design(v, v))
    assert second.status_code == 409 and "running" in second.json()["error"]["message"]

    assert [e["name"] for e in c.get("/experiments").json()["experiments"]] == ["exp-a"]
    assert c.get("/experiments/exp-a").json()["variants"][0]["model_version"] == v
    assert c.get("/experiments/nope").json()["error"]["code"] == "experiment_not_found"

    stopped = c.post("/experiments/exp-a/stop")
    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
    assert c.get("/experiments/exp-a").json()["stopped_at"] is not None
    unknown = c.put("/experiments/exp-b", json=design(v, "no-such-version"))
    assert unknown.status_code == 409 and "no-such-version" in unknown.json()["error"]["message"]
    assert c.get("/experiments/exp-b").status_code == 404  # nothing half-written
    bad = c.put("/experiments/exp-c", json={"unit": "user", "variants": []})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"


def test_writes_need_the_key(client_factory: ClientFactory) -> None:
    with client_factory(events_secret=SECRET, api_key="k" * 20) as c:
        v = served_version(c)
        assert c.put("/experiments/e", json=design(v, v)).json()["error"]["code"] == "unauthorized"
        auth = {"Authorization": "Bearer " + "k" * 20}
        assert c.put("/experiments/e", json=design(v, v), headers=auth).status_code == 201
        assert c.post("/experiments/e/stop").status_code == 401
        assert c.post("/experiments/e/stop", headers=auth).status_code == 200


def test_answer_fields_inside_and_outside_the_experiment(exp_client: TestClient) -> None:
    c = exp_client
    fields = ("request_id", "experiment", "variant", "attribution_token")
    before = c.get("/similar/it-0", params={"user_id": "u1"}).json()
    assert all(before[f] is None for f in fields) and before["results"]  # no experiment yet

    v = served_version(c)
    c.put("/experiments/exp-f", json=design(v, v))
    inside = c.get("/similar/it-0", params={"user_id": "u1", "k": 5}).json()
    assert inside["experiment"] == "exp-f" and inside["variant"] in ("control", "treatment")
    assert len(inside["request_id"]) == 24 and inside["attribution_token"]
    claims = AttributionTokens(SECRET).decode(inside["attribution_token"])
    assert (claims.unit_id, claims.query_item, claims.n_shown) == ("u1", "it-0", len(inside["results"]))

    for params in ({}, {"session_id": "s1"}, {"user_id": "u1", "model_version": v}):
        outside = c.get("/similar/it-0", params=params).json()
        assert all(outside[f] is None for f in fields), params
        assert [r["item_id"] for r in outside["results"]][:5] == [r["item_id"] for r in inside["results"]]
    assert c.get("/similar/it-0", params={"user_id": "bad id!"}).status_code == 422

    metrics = c.get("/metrics").text
    assert f'lookalike_experiment_events_total{{experiment="exp-f",type="served",variant="{inside["variant"]}"}}' in (
        metrics
    )


def test_session_experiments_assign_by_session(exp_client: TestClient) -> None:
    c = exp_client
    v = served_version(c)
    c.put("/experiments/by-session", json=design(v, v, unit="session"))
    assert c.get("/similar/it-1", params={"user_id": "u1"}).json()["experiment"] is None
    answer = c.get("/similar/it-1", params={"user_id": "u1", "session_id": "s-9"}).json()
    assert answer["experiment"] == "by-session"
    assert AttributionTokens(SECRET).decode(answer["attribution_token"]).unit_id == "s-9"


def test_post_events_checks_each_event_and_the_report_counts_duplicates_once(exp_client: TestClient) -> None:
    c = exp_client
    v = served_version(c)
    c.put("/experiments/ev", json=design(v, v))
    answer = c.get("/similar/it-0", params={"user_id": "u7", "k": 5}).json()
    token, shown = answer["attribution_token"], [r["item_id"] for r in answer["results"]]
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    claims = AttributionTokens(SECRET).decode(token)
    expired = AttributionTokens(SECRET).issue(
        request_id=claims.request_id, experiment="ev", variant=claims.variant, unit_id="u7", query_item="it-0",
        shown=shown, issued_at=time.time() - 2 * 86_400,
    )  # fmt: skip
    click = {"type": "click", "attribution_token": token, "item_id": shown[0], "position": 1}
    events = [
        {"type": "impression", "attribution_token": token, "item_id": shown[0], "position": 1},
        click,
        click,  # a retry: accepted, counted once
        {**click, "attribution_token": forged},
        {**click, "attribution_token": expired},
        {**click, "item_id": "it-never-shown"},
        {**click, "position": 2},  # shown[0] was at position 1
        {**click, "type": "like"},
        "not an event",
    ]
    response = c.post("/events", json={"events": events})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["index"] for r in results] == list(range(len(events)))
    assert [r["status"] for r in results] == [200, 200, 200, 422, 422, 422, 422, 422, 422]
    codes = [r["error"]["code"] if r["error"] else None for r in results]
    assert codes[:3] == [None, None, None]
    assert codes[3:7] == ["invalid_token", "token_expired", "item_not_shown", "item_not_shown"]
    assert codes[7:] == ["validation_error", "validation_error"]
    assert response.json()["accepted"] == 3

    report = c.get("/experiments/ev/report").json()
    row = next(r for r in report["variants"] if r["name"] == claims.variant)
    assert (row["served"], row["impressions"], row["clicks"], row["units"]) == (1, 1, 1, 1)

    for body in ({"events": []}, {"events": [click] * 1001}, {"events": click}, [click], {"events": [], "x": 1}):
        refused = c.post("/events", json=body)
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "validation_error"


def test_report_formats(exp_client: TestClient) -> None:
    c = exp_client
    v = served_version(c)
    c.put("/experiments/fmt", json=design(v, v))
    for u in range(6):
        c.get("/similar/it-3", params={"user_id": f"u{u}"})
    as_json = c.get("/experiments/fmt/report")
    assert as_json.headers["content-type"].startswith("application/json")
    assert sum(r["served"] for r in as_json.json()["variants"]) == 6
    table = c.get("/experiments/fmt/report", params={"format": "table"})
    assert table.headers["content-type"].startswith("text/plain") and "treatment" in table.text
    page = c.get("/experiments/fmt/report", params={"format": "html"})
    assert page.headers["content-type"].startswith("text/html") and "<table" in page.text
    assert c.get("/experiments/fmt/report", params={"format": "pdf"}).status_code == 422
    assert c.get("/experiments/nope/report").status_code == 404


def test_shadow_mode_answers_the_control_and_logs_the_treatment(exp_client: TestClient) -> None:
    c = exp_client
    v = served_version(c)
    c.put("/experiments/shadow", json=design(v, v, shadow=True))
    plain = [r["item_id"] for r in c.get("/similar/it-4", params={"model_version": v}).json()["results"]]
    answers = [c.get("/similar/it-4", params={"user_id": f"u{u}"}).json() for u in range(30)]
    assert {a["variant"] for a in answers} == {"control"}
    assert all([r["item_id"] for r in a["results"]] == plain for a in answers)
    report = c.get("/experiments/shadow/report").json()
    [shadow] = report["shadow"]
    # every unit the assignment put in the treatment had its list computed and logged beside the control's
    assert shadow["variant"] == "treatment" and 0 < shadow["answers"] < 30
    assert shadow["overlap_at_k"] == 1.0  # both variants use the same version here


def test_experiments_file_is_applied_at_start_up(client_factory: ClientFactory, tmp_path: Path) -> None:
    with client_factory(events_secret=SECRET) as c:
        v = served_version(c)
    path = tmp_path / "experiments.yaml"
    path.write_text(
        "experiments:\n  - name: from-file\n    unit: user\n    variants:\n"
        f"      - {{name: control, model_version: {v}, weight: 1}}\n"
        f"      - {{name: treatment, model_version: {v}, weight: 1}}\n"
    )
    with client_factory(events_secret=SECRET, experiments_file=path) as c:
        assert c.get("/experiments/from-file").json()["state"] == "running"


def test_a_generated_secret_is_kept_per_data_dir(
    tmp_path: Path, tiny_model_path: Path, tiny_encoder: OnnxImageEncoder
) -> None:
    settings = make_settings(tmp_path, tiny_model_path)
    tokens = []
    for _ in range(2):
        store = make_store("edge", settings)
        try:
            with TestClient(create_app(settings, encoder=tiny_encoder, store=store)) as c:
                if not tokens:
                    index(c, ITEMS[:3])
                    v = served_version(c)
                    c.put("/experiments/gen", json=design(v, v))
                answer = c.get("/similar/it-0", params={"user_id": "u"}).json()
                tokens.append(answer)
                # a token from the first instance is still accepted after the restart
                first = tokens[0]
                event = {"type": "click", "attribution_token": first["attribution_token"], "position": 1}
                event["item_id"] = first["results"][0]["item_id"]
                assert c.post("/events", json={"events": [event]}).json()["results"][0]["status"] == 200
        finally:
            store.close()
    secret_file = tmp_path / "events" / ".secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600


# ------------------------------------------------------------------------------------- live `python -m app`


@contextmanager
def live(data: Path, *models: Path) -> Iterator[httpx.Client]:
    env = {"LOOKALIKE_MODEL_PATH": ",".join(map(str, models)), "LOOKALIKE_QDRANT_PATH": str(data / "qdrant")}
    env["LOOKALIKE_EVENTS_SECRET"] = SECRET
    with live_server(env) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        client.server = server  # type: ignore[attr-defined]
        yield client


def test_acknowledged_events_survive_kill_9(tmp_path: Path, tiny_model_path: Path) -> None:
    with live(tmp_path, tiny_model_path) as c:
        index(c, ITEMS[:4])
        v = served_version(c)
        assert c.put("/experiments/durable", json=design(v, v)).status_code == 201
        events = []
        for u in range(10):
            answer = c.get("/similar/it-0", params={"user_id": f"u{u}", "k": 3}).json()
            for p, hit in enumerate(answer["results"], start=1):
                event = {"attribution_token": answer["attribution_token"], "item_id": hit["item_id"], "position": p}
                events += [{"type": "impression", **event}, {"type": "click", **event}]
        acked = c.post("/events", json={"events": events}).json()["accepted"]
        assert acked == len(events)
        os.kill(c.server.process.pid, signal.SIGKILL)  # type: ignore[attr-defined]
        c.server.process.wait(timeout=30)  # type: ignore[attr-defined]
    with live(tmp_path, tiny_model_path) as c:
        report = c.get("/experiments/durable/report").json()
        assert sum(r["clicks"] for r in report["variants"]) == acked // 2
        assert sum(r["impressions"] for r in report["variants"]) == acked // 2
        assert report["state"] == "running"


def test_live_simulation_reports_the_known_lift(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    models = request.getfixturevalue("two_models")
    with live(tmp_path, models.v1_path, models.v2_path) as c:
        outcome = ab_live.run(c, name="sim", n_users=150, n_items=20, seed=3)
    assert outcome.accepted == outcome.posted > 0
    report = outcome.report
    assert [(v["name"], v["model_version"]) for v in report["variants"]] == [("control", "v1"), ("treatment", "v2")]
    assert sum(r["served"] for r in report["variants"]) == outcome.answers
    assert ab_live.checks(report) == {"CTR lift CI contains +50%": True, "CTR lift CI excludes 0": True}


# ------------------------------------------------------------------------- two model versions in one store


def test_variants_rank_with_their_version_and_assignment_survives_a_restart(catalog: Catalog) -> None:
    models = (catalog.models.v1, catalog.models.v2)
    users = [f"user-{i}" for i in range(30)]
    with catalog.app(*models, events_secret=SECRET) as c:
        index(c)
        assert c.put("/experiments/upgrade", json=design("v1", "v2")).status_code == 201
        answers = {u: c.get("/similar/it-2", params={"user_id": u}).json() for u in users}
    assert {a["variant"] for a in answers.values()} == {"control", "treatment"}
    for a in answers.values():  # each answer names the version that ranked it
        assert a["model_version"] == {"control": "v1", "treatment": "v2"}[a["variant"]]
    with catalog.app(*models, events_secret=SECRET) as c:  # another instance on the same store
        again = {u: c.get("/similar/it-2", params={"user_id": u}).json()["variant"] for u in users}
        assert c.get("/experiments/upgrade").json()["state"] == "running"
        # v2 retired under the running experiment: its users are answered outside it, never with an error
        assert c.delete("/models/v2").status_code == 200
        treated = next(u for u, a in answers.items() if a["variant"] == "treatment")
        fallback = c.get("/similar/it-2", params={"user_id": treated})
        assert fallback.status_code == 200
        assert (fallback.json()["model_version"], fallback.json()["experiment"]) == ("v1", None)
    assert again == {u: a["variant"] for u, a in answers.items()}


def test_a_version_without_full_coverage_is_refused(catalog: Catalog) -> None:
    with catalog.app(catalog.models.v1, events_secret=SECRET) as c:
        index(c)
    with catalog.app(catalog.models.v1, catalog.models.v2, events_secret=SECRET) as c:  # v2 added, not backfilled
        refused = c.put("/experiments/too-early", json=design("v1", "v2"))
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "experiment_conflict"
        assert f"coverage 0/{len(ITEMS)}" in refused.json()["error"]["message"]
        assert c.get("/experiments").json()["experiments"] == []


def test_shadow_mode_with_two_versions(catalog: Catalog) -> None:
    with catalog.app(catalog.models.v1, catalog.models.v2, events_secret=SECRET) as c:
        index(c)
        c.put("/experiments/shadow-v2", json=design("v1", "v2", shadow=True))
        control = [r["item_id"] for r in c.get("/similar/it-5", params={"model_version": "v1"}).json()["results"]]
        treated = [r["item_id"] for r in c.get("/similar/it-5", params={"model_version": "v2"}).json()["results"]]
        answers = [c.get("/similar/it-5", params={"user_id": f"u{u}"}).json() for u in range(30)]
        assert {(a["variant"], a["model_version"]) for a in answers} == {("control", "v1")}
        assert all([r["item_id"] for r in a["results"]] == control for a in answers)
        [shadow] = c.get("/experiments/shadow-v2/report").json()["shadow"]
    assert shadow["variant"] == "treatment" and 0 < shadow["answers"] < 30
    assert shadow["overlap_at_k"] == pytest.approx(len(set(control) & set(treated)) / len(control))


def test_cli_lists_reports_and_imports(
    tmp_path: Path, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with live(tmp_path, tiny_model_path) as c:
        index(c, ITEMS[:4])
        v = served_version(c)
        c.put("/experiments/cli-exp", json=design(v, v))
        answer = c.get("/similar/it-0", params={"user_id": "u1"}).json()
        url = str(c.base_url)
        assert cli.main(["experiments", "list", "--url", url]) == 0
        assert json.loads(capsys.readouterr().out)["experiments"][0]["name"] == "cli-exp"
        assert cli.main(["experiments", "report", "cli-exp", "--url", url, "--format", "table"]) == 0
        assert answer["variant"] in capsys.readouterr().out
        assert cli.main(["experiments", "report", "nope", "--url", url]) == 1
        capsys.readouterr()

    shown = answer["results"][0]["item_id"]
    logs = tmp_path / "clicks.jsonl"
    rows = [{"type": "click", "item_id": shown, "position": 1, "attribution_token": answer["attribution_token"]}]
    rows.append({**rows[0], "item_id": "it-not-shown"})
    logs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("LOOKALIKE_MODEL_PATH", str(tiny_model_path))
    monkeypatch.setenv("LOOKALIKE_QDRANT_PATH", str(tmp_path / "qdrant"))
    monkeypatch.setenv("LOOKALIKE_EVENTS_SECRET", SECRET)
    assert cli.main(["experiments", "import", str(logs)]) == 0
    imported = json.loads(capsys.readouterr().out)
    assert (imported["rows"], imported["accepted"], imported["rejected"]) == (2, 1, {"item_not_shown": 1})
    assert cli.main(["experiments", "report", "cli-exp", "--format", "json"]) == 0  # in-process
    report = json.loads(capsys.readouterr().out)
    assert sum(r["clicks"] for r in report["variants"]) == 1
    assert cli.main(["experiments", "list"]) == 0
    assert [e["state"] for e in json.loads(capsys.readouterr().out)["experiments"]] == ["running"]
