"""An A/B test driven against a LIVE service over HTTP, end to end, with a known true lift.

    python -m bench.ab_live --url http://127.0.0.1:8000 [--api-key KEY] [--users 2000] [--items 200] [--seed 1]
    python -m bench.ab_live [--users 2000] ...   # starts `python -m app` itself (tiny random-weight models)

What it does: indexes a generated catalog (photo-like JPEGs) through POST /items/batch; picks two model versions
(GET /models: the serving one and a fully covered candidate; a service with one version runs an A/A-shaped test
on it, the click model still makes the treatment better); PUT /experiments/NAME (unit user, 50/50); N simulated
users, each with 1-3 sessions of 1-3 GET /similar/{item}?user_id=U&session_id=S answers; every shown item gets an
impression and is clicked with probability 4% at position 1, x0.85 per further position, times a per-user
propensity (gamma, mean 1), x1.5 in the treatment; a click is a purchase with a probability that makes the
treatment's conversion +14%. Events are posted in batches (POST /events), then GET /experiments/NAME/report.
Prints the report table and whether the CTR lift CI contains +50% and excludes 0 (exit 1 otherwise).
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from app.experiments.report import render_table
from models.photos import photo

K = 10
BASE_CTR = 0.04
DECAY = 0.85
CTR_LIFT = 0.5
CONVERSION_LIFT = 0.14
PURCHASE_GIVEN_CLICK = 0.10
TREATMENT = "treatment"


@dataclass
class Outcome:
    answers: int = 0
    posted: int = 0
    accepted: int = 0
    requests: int = 0
    report: dict[str, Any] = field(default_factory=dict)


def _check(response: httpx.Response, *ok: int) -> httpx.Response:
    if response.status_code not in (ok or (200,)):
        raise RuntimeError(f"{response.request.method} {response.request.url}: {response.status_code} {response.text}")
    return response


def index_catalog(client: httpx.Client, n_items: int, seed: int, batch: int = 16) -> list[str]:
    """POST /items/batch of generated photos; returns the item ids."""
    ids = [f"ab-{seed}-{i}" for i in range(n_items)]
    for start in range(0, n_items, batch):
        items = [
            {"item_id": item_id, "image_base64": base64.b64encode(photo(seed * 100_000 + i, 224)).decode()}
            for i, item_id in enumerate(ids[start : start + batch], start=start)
        ]
        results = _check(client.post("/items/batch", json={"items": items}, timeout=300)).json()["results"]
        failed = [r for r in results if r["status"] not in (200, 201)]
        if failed:
            raise RuntimeError(f"indexing failed: {failed[:3]}")
    return ids


def pick_versions(client: httpx.Client) -> tuple[str, str]:
    """(control, treatment): the serving version and a fully covered candidate, else the served one twice."""
    models = client.get("/models")
    if models.status_code == 200:
        body = models.json()
        ready = [
            v["model_version"]
            for v in body["versions"]
            if v["state"] == "candidate" and v["coverage"] >= 1.0 and v["model_version"] != body["serving"]
        ]
        if ready:
            return body["serving"], ready[0]
        return body["serving"], body["serving"]
    served = _check(client.get("/info")).json()["model_version"]
    return served, served


def put_experiment(client: httpx.Client, name: str, control: str, treatment: str, unit: str = "user") -> None:
    body = {
        "unit": unit,
        "variants": [
            {"name": "control", "model_version": control, "weight": 50},
            {"name": TREATMENT, "model_version": treatment, "weight": 50},
        ],
    }
    _check(client.put(f"/experiments/{name}", json=body), 200, 201)


def drive(client: httpx.Client, name: str, items: list[str], n_users: int, seed: int, batch: int = 100) -> Outcome:
    """The users' traffic and their events (see the module docstring); returns the counts and the report."""
    rng = np.random.default_rng(seed)
    outcome = Outcome()
    pending: list[dict[str, Any]] = []

    def post(events: list[dict[str, Any]]) -> None:
        body = _check(client.post("/events", json={"events": events}, timeout=60)).json()
        outcome.posted += len(events)
        outcome.accepted += body["accepted"]
        outcome.requests += 1

    for u in range(n_users):
        user = f"user-{seed}-{u}"
        propensity = rng.gamma(shape=2.0, scale=0.5)
        for s in range(int(rng.integers(1, 4))):
            for _ in range(int(rng.integers(1, 4))):
                query_item = items[int(rng.integers(len(items)))]
                params = {"user_id": user, "session_id": f"{user}-s{s}", "k": K}
                answer = _check(client.get(f"/similar/{query_item}", params=params)).json()
                if answer["attribution_token"] is None:
                    raise RuntimeError(f"the answer is not in experiment {name!r}: {answer}")
                outcome.answers += 1
                treated = answer["variant"] == TREATMENT
                for position, hit in enumerate(answer["results"], start=1):
                    event = {"attribution_token": answer["attribution_token"], "item_id": hit["item_id"]}
                    event["position"] = position
                    pending.append({"type": "impression", **event})
                    p_click = BASE_CTR * DECAY ** (position - 1) * propensity * (1 + CTR_LIFT * treated)
                    if rng.random() < p_click:
                        pending.append({"type": "click", **event})
                        p_buy = PURCHASE_GIVEN_CLICK * ((1 + CONVERSION_LIFT) / (1 + CTR_LIFT) if treated else 1)
                        if rng.random() < p_buy:
                            pending.append({"type": "purchase", **event})
                while len(pending) >= batch:
                    post(pending[:batch])
                    del pending[:batch]
    if pending:
        post(pending)
    outcome.report = _check(client.get(f"/experiments/{name}/report")).json()
    return outcome


def ci_contains(ci: list[float] | None, x: float) -> bool:
    return ci is not None and ci[0] <= x <= ci[1]


def checks(report: dict[str, Any]) -> dict[str, bool]:
    lift = report["variants"][1]["lift"]["ctr"]
    return {
        "CTR lift CI contains +50%": ci_contains(lift["ci"], CTR_LIFT),
        "CTR lift CI excludes 0": not ci_contains(lift["ci"], 0.0),
    }


def run(client: httpx.Client, *, name: str, n_users: int, n_items: int, seed: int, batch: int = 100) -> Outcome:
    items = index_catalog(client, n_items, seed)
    control, treatment = pick_versions(client)
    put_experiment(client, name, control, treatment)
    try:
        return drive(client, name, items, n_users, seed, batch)
    finally:
        _check(client.post(f"/experiments/{name}/stop"))


def _own_service() -> Any:
    """`python -m app` on loopback with two tiny random-weight models (seeds 0 and 1: two model versions; the
    first serves, the second is a candidate that every write fills, so both cover the catalog)."""
    import tempfile

    from bench.common import cached_model
    from bench.live import running_service

    data = tempfile.mkdtemp(prefix="ab-live-")
    models = ",".join(str(cached_model("tiny", seed=seed)) for seed in (0, 1))
    env = {"LOOKALIKE_MODEL_PATH": models, "LOOKALIKE_QDRANT_PATH": f"{data}/qdrant"}
    return running_service(env, name="ab_live")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running service (default: start one on loopback)")
    parser.add_argument("--api-key", help="LOOKALIKE_API_KEY of the service, for the writes")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=100, help="events per POST /events")
    parser.add_argument("--name", default=None, help="experiment name (default ab-live-<seed>-<time>)")
    args = parser.parse_args(argv)

    name = args.name or f"ab-live-{args.seed}-{int(time.time())}"
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    t0 = time.perf_counter()
    with nullcontext(args.url) if args.url else _own_service() as service:
        url = service if isinstance(service, str) else service.url
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            outcome = run(client, name=name, n_users=args.users, n_items=args.items, seed=args.seed, batch=args.batch)
    print(render_table(outcome.report))
    print(
        f"{outcome.answers} answers, {outcome.posted} events in {outcome.requests} POST /events "
        f"({outcome.accepted} accepted), {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )
    results = checks(outcome.report)
    for check, ok in results.items():
        print(f"{'PASS' if ok else 'FAIL'}  {check}", file=sys.stderr)
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
