"""What experiments cost over HTTP: GET /similar inside vs outside an experiment, and POST /events throughput.

    python -m bench.experiments_http [--items 500] [--requests 2000] [--event-batches 300] [--json] [--quick]

Starts `python -m app` on loopback (two tiny random-weight model versions, embedded store), indexes --items
generated photos, starts a 50/50 experiment between the two versions, then:
1. /similar: --requests pairs of GET /similar/{item}?k=10, one without a user id (outside the experiment) and
   one with a user id (assigned, ranked with the variant's version, token issued, served row queued for the
   group commit), interleaved in one run so both see the same machine state; sequential keep-alive client.
   Target: p99 inside - p99 outside <= 1 ms (the answer waits for no fsync).
2. POST /events: --event-batches requests of 100 impression events (tokens from step 1), sequential, each
   acknowledged only after its events are fsynced: events/s.
"""

from __future__ import annotations

import base64
import json
import tempfile
import time
from typing import Any

import httpx

from bench.common import (
    KeepAliveClient,
    base_parser,
    cached_model,
    emit,
    log,
    machine_info,
    summary_ms,
    table,
)
from bench.live import running_service
from models.photos import photo

K = 10


def index(client: httpx.Client, n_items: int) -> list[str]:
    ids = [f"b{i}" for i in range(n_items)]
    for start in range(0, n_items, 32):
        items = [
            {"item_id": item_id, "image_base64": base64.b64encode(photo(i, 224)).decode()}
            for i, item_id in enumerate(ids[start : start + 32], start=start)
        ]
        response = client.post("/items/batch", json={"items": items}, timeout=600)
        assert response.status_code == 200 and all(r["status"] == 201 for r in response.json()["results"])
    return ids


def similar_side_by_side(host: str, port: int, ids: list[str], pairs: int) -> tuple[dict, dict, list[dict]]:
    """Interleaved outside/inside requests; returns both latency summaries and the inside answers."""
    http = KeepAliveClient(host, port)
    outside: list[float] = []
    inside: list[float] = []
    answers: list[dict[str, Any]] = []
    try:
        for i in range(pairs):
            item = ids[i % len(ids)]
            for path, samples in ((f"/similar/{item}?k={K}", outside), (f"/similar/{item}?k={K}&user_id=u{i}", inside)):
                t0 = time.perf_counter()
                status, body = http.get(path)
                samples.append(time.perf_counter() - t0)
                assert status == 200, body[:200]
                if samples is inside:
                    answers.append(json.loads(body))
    finally:
        http.close()
    return summary_ms(outside), summary_ms(inside), answers


def events_throughput(client: httpx.Client, answers: list[dict], batches: int, max_s: float) -> dict[str, Any]:
    events = [
        {"type": "impression", "attribution_token": a["attribution_token"], "item_id": hit["item_id"], "position": p}
        for a in answers
        for p, hit in enumerate(a["results"], start=1)
    ]
    sent = accepted = 0
    latencies: list[float] = []
    t0 = time.perf_counter()
    for b in range(batches):
        batch = [events[(b * 100 + j) % len(events)] for j in range(100)]
        t1 = time.perf_counter()
        response = client.post("/events", json={"events": batch})
        latencies.append(time.perf_counter() - t1)
        assert response.status_code == 200, response.text[:200]
        sent += len(batch)
        accepted += response.json()["accepted"]
        if time.perf_counter() - t0 > max_s:
            break
    elapsed = time.perf_counter() - t0
    return {
        "batches": len(latencies),
        "events": sent,
        "accepted": accepted,
        "events_per_s": round(sent / elapsed, 1),
        **{f"batch_{k}": v for k, v in summary_ms(latencies).items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--requests", type=int, default=2000, help="pairs of GET /similar (outside, inside)")
    parser.add_argument("--event-batches", type=int, default=300, help="POST /events of 100 events each")
    parser.add_argument("--max-s", type=float, default=60.0, help="time limit of the POST /events loop")
    args = parser.parse_args(argv)
    if args.quick:
        args.items, args.requests, args.event_batches = 40, 100, 20

    models = ",".join(str(cached_model("tiny", seed=seed)) for seed in (0, 1))
    data = tempfile.mkdtemp(prefix="bench-exp-http-")
    env = {"LOOKALIKE_MODEL_PATH": models, "LOOKALIKE_QDRANT_PATH": f"{data}/qdrant", "LOOKALIKE_LOG_LEVEL": "warning"}
    with running_service(env, name="experiments_http") as service, httpx.Client(base_url=service.url) as client:
        log(f"indexing {args.items} items ...")
        ids = index(client, args.items)
        body = client.get("/models").json()
        versions = [v["model_version"] for v in body["versions"] if v["state"] != "retired"]
        design = {
            "unit": "user",
            "variants": [
                {"name": "control", "model_version": versions[0], "weight": 50},
                {"name": "treatment", "model_version": versions[-1], "weight": 50},
            ],
        }
        assert client.put("/experiments/bench", json=design).status_code in (200, 201)
        log(f"{args.requests} pairs of GET /similar (outside, inside) ...")
        outside, inside, answers = similar_side_by_side(service.host, service.port, ids, args.requests)
        log(f"up to {args.event_batches} POST /events of 100 ...")
        events = events_throughput(client, answers, args.event_batches, args.max_s)

    result = {
        "machine": machine_info(),
        "items": args.items,
        "similar": {"outside": outside, "inside": inside},
        "p99_overhead_ms": round(inside["p99_ms"] - outside["p99_ms"], 3),
        "events": events,
    }

    def render(r: dict[str, Any]) -> str:
        rows = [{"where": name, **summary} for name, summary in r["similar"].items()]
        lines = [table(rows, title=f"GET /similar, k={K}, {args.requests} interleaved pairs")]
        lines.append(f"p99 overhead inside the experiment: {r['p99_overhead_ms']} ms (target <= 1 ms)")
        lines.append(table([r["events"]], title="POST /events, batches of 100, sequential, loopback"))
        return "\n".join(lines)

    emit(result, args.json, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
