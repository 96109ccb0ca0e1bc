"""`lookalike` command line: bulk-index a JSONL file, ask for look-alikes, run the server.

Each JSONL line is an object with `item_id`, an image (`image`: local path or http(s) URL, or
`image_url` / `image_base64`) and optional metadata (title, category, price, seller_id, status,
attributes). Relative paths are read from the JSONL file's folder. A bad line is reported and skipped,
never fatal. Without --url the items go through the service code in-process (the embedded store must
not be open in a running server at the same time); with --url they go over HTTP to POST /items/batch.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from app.core.errors import LookalikeError
from app.core.schemas import BATCH_MAX, ErrorBody, ErrorDetail, SimilarQuery
from app.core.settings import SettingsError, load_settings

# A sender answers one POST /items/batch result per item: {"item_id", "status", "error": {"code", "message"} | None}
Sender = Callable[[list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]


class LineError(ValueError):
    pass


def item_from_line(line: str, base_dir: Path) -> dict[str, Any]:
    """One JSONL line -> a POST /items body (local image files inlined as base64)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise LineError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise LineError("a line must be a JSON object")
    image = obj.pop("image", None)
    if image is None:
        return obj
    if not isinstance(image, str):
        raise LineError("`image` must be a path or an http(s) URL")
    if image.startswith(("http://", "https://")):
        obj["image_url"] = image
        return obj
    path = Path(image) if Path(image).is_absolute() else base_dir / image
    try:
        obj["image_base64"] = base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError as exc:
        raise LineError(f"cannot read image {path}: {exc.strerror}") from None
    return obj


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                yield number, line


@asynccontextmanager
async def in_process_sender() -> AsyncIterator[Sender]:
    from app.service.runtime import running_service

    async with running_service(load_settings()) as service:

        async def send(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [r.model_dump() for r in await service.index_items(items)]

        yield send


@asynccontextmanager
async def http_sender(url: str, api_key: str | None) -> AsyncIterator[Sender]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:

        async def send(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            response = await client.post("/items/batch", json={"items": items})
            if response.status_code != 200:
                error = response.json().get("error", {}) if response.content else {}
                return [{"item_id": i.get("item_id"), "status": response.status_code, "error": error} for i in items]
            return response.json()["results"]

        yield send


async def index_file(path: Path, send: Sender, batch_size: int) -> tuple[int, int]:
    ok = failed = 0
    total = sum(1 for _ in read_lines(path))
    progress = tqdm(total=total, unit="item", desc=f"indexing {path.name}")

    def report(number: int, item_id: Any, message: str) -> None:
        nonlocal failed
        failed += 1
        tqdm.write(f"line {number} ({item_id}): {message}", file=sys.stderr)

    async def flush(chunk: list[tuple[int, dict[str, Any]]]) -> None:
        nonlocal ok
        results = await send([item for _, item in chunk])
        for (number, item), result in zip(chunk, results, strict=True):
            if result["status"] < 300:
                ok += 1
            else:
                error = result.get("error") or {}
                report(number, item.get("item_id"), f"{result['status']} {error.get('code')}: {error.get('message')}")
        progress.update(len(chunk))
        progress.set_postfix(ok=ok, failed=failed)

    chunk: list[tuple[int, dict[str, Any]]] = []
    for number, line in read_lines(path):
        try:
            chunk.append((number, item_from_line(line, path.parent)))
        except LineError as exc:
            report(number, "?", str(exc))
            progress.update(1)
            continue
        if len(chunk) == batch_size:
            await flush(chunk)
            chunk = []
    if chunk:
        await flush(chunk)
    progress.close()
    return ok, failed


async def _index(args: argparse.Namespace) -> int:
    sender = http_sender(args.url, args.api_key) if args.url else in_process_sender()
    async with sender as send:
        ok, failed = await index_file(Path(args.file), send, args.batch_size)
    print(f"indexed {ok} item(s), {failed} failed", file=sys.stderr)
    return 0 if failed == 0 else 3


async def _similar(args: argparse.Namespace) -> int:
    params = {"k": args.k, "include_sold": args.include_sold}
    if args.category:
        params["category"] = args.category
    if args.model_version:
        params["model_version"] = args.model_version
    query = SimilarQuery.model_validate(params)
    return await _call(
        args, lambda service: service.similar(args.item_id, query), "GET", f"/similar/{args.item_id}", params
    )


# ---- lookalike models backfill | compare ----------------------------------------------------------


async def _models_backfill(args: argparse.Namespace) -> int:
    """Exit 0: done with no failed item; 3: done, some images could not be fetched/decoded; 1: the run failed."""
    partition = args.partition
    status = await (_backfill_http(args, partition) if args.url else _backfill_in_process(args, partition))
    print(
        f"backfill of {status['version']} (partition {status['partition']}) {status['state']}: "
        f"{status['embedded']} embedded, {status['skipped']} skipped, {status['failed']} failed, "
        f"coverage {status['coverage']:.4f}",
        file=sys.stderr,
    )
    if status["failed_ids"]:
        print("failed items: " + " ".join(status["failed_ids"]), file=sys.stderr)
    if status["state"] != "done":
        if status.get("error"):
            print(f"lookalike: {status['error']}", file=sys.stderr)
        return 1
    return 3 if status["failed"] else 0


async def _backfill_in_process(args: argparse.Namespace, partition: Any) -> dict[str, Any]:
    from app.service.backfill import service_backfill
    from app.service.runtime import running_service

    async with running_service(load_settings()) as service:
        (await service.versions(fresh=True)).check_active(args.version)  # 404 model_not_found otherwise
        progress = tqdm(unit="item", desc=f"backfill {args.version}")
        backfill = service_backfill(service, args.version, partition, on_item=lambda _: progress.update(1))
        progress.total = await backfill.count_missing()
        progress.refresh()
        status = await backfill.run()
        progress.close()
        return status.as_dict()


async def _backfill_http(args: argparse.Namespace, partition: Any) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    path = f"/models/{args.version}/backfill"
    async with httpx.AsyncClient(base_url=args.url, headers=headers, timeout=30) as client:
        response = await client.post(path, params={"partition": str(partition)})
        if response.status_code != 202:
            raise LookalikeCommandError(_error_text(response))
        status = response.json()
        progress = tqdm(total=status["missing_at_start"], unit="item", desc=f"backfill {args.version}")
        done = 0
        while True:
            handled = status["embedded"] + status["skipped"] + status["failed"]
            progress.update(handled - done)
            done = handled
            if status["state"] != "running":
                break
            await asyncio.sleep(args.poll_s)
            response = await client.get(path)
            if response.status_code != 200:
                raise LookalikeCommandError(_error_text(response))
            status = response.json()
        progress.close()
        return status


async def _models_compare(args: argparse.Namespace) -> int:
    from app.service.compare import compare, render, sample_ids

    if args.url:
        async with httpx.AsyncClient(base_url=args.url, timeout=30) as client:
            ids = await _http_item_ids(client)
            report = await compare(
                _http_ranker(client), sample_ids(ids, args.sample, args.seed), args.v1, args.v2, args.k
            )
    else:
        from app.service.runtime import running_service

        async with running_service(load_settings()) as service:
            ids = await _service_item_ids(service)
            report = await compare(
                _service_ranker(service), sample_ids(ids, args.sample, args.seed), args.v1, args.v2, args.k
            )
    print(json.dumps(report.as_dict(), indent=2) if args.json else render(report))
    return 0 if report.compared else 1


async def _http_item_ids(client: httpx.AsyncClient) -> list[str]:
    ids: list[str] = []
    cursor: str | None = None
    for _ in range(1_000_000):  # bounded: 200 ids a page
        params: dict[str, Any] = {"limit": 200} | ({"cursor": cursor} if cursor else {})
        response = await client.get("/items", params=params)
        if response.status_code != 200:
            raise LookalikeCommandError(_error_text(response))
        page = response.json()
        ids += [item["item_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    return ids


def _http_ranker(client: httpx.AsyncClient) -> Any:
    async def rank(item_id: str, version: str, k: int) -> list[tuple[str, float]] | None:
        response = await client.get(f"/similar/{item_id}", params={"k": k, "model_version": version})
        if response.status_code in (404, 409) and _error_code(response) in ("model_not_ready", "item_not_found"):
            return None
        if response.status_code != 200:
            raise LookalikeCommandError(_error_text(response))
        return [(r["item_id"], r["score"]) for r in response.json()["results"]]

    return rank


async def _service_item_ids(service: Any) -> list[str]:
    from app.core.schemas import ItemListQuery

    ids: list[str] = []
    cursor: str | None = None
    for _ in range(1_000_000):  # bounded: 200 ids a page
        page = await service.list_items(ItemListQuery(limit=200, cursor=cursor))
        ids += [item.item_id for item in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    return ids


def _service_ranker(service: Any) -> Any:
    async def rank(item_id: str, version: str, k: int) -> list[tuple[str, float]] | None:
        try:
            answer = await service.similar(item_id, SimilarQuery(k=k, model_version=version))
        except LookalikeError as exc:
            if exc.code in ("model_not_ready", "item_not_found"):
                return None
            raise
        return [(r.item_id, r.score) for r in answer.results]

    return rank


def _partition(text: str) -> Any:
    from app.service.backfill import Partition

    try:
        return Partition.parse(text)
    except LookalikeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class LookalikeCommandError(RuntimeError):
    """A service answered with an error the command cannot go on from."""


def _error_code(response: httpx.Response) -> str | None:
    try:
        return response.json().get("error", {}).get("code")
    except ValueError:
        return None


def _error_text(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", {})
        return f"{response.status_code} {error.get('code')}: {error.get('message')}"
    except ValueError:
        return f"{response.status_code} {response.text[:200]}"


def add_models_backfill_compare(models: Any) -> None:
    """`lookalike models backfill` and `lookalike models compare` (models: the `models` subparsers)."""
    bf = models.add_parser("backfill", help="embed with VERSION every item that lacks its vector")
    bf.add_argument("version")
    bf.add_argument(
        "--partition",
        type=_partition,
        default="0/1",
        help="I/N: only this share of the catalog (N workers, one partition each)",
    )
    bf.add_argument("--url", help="start it in a running service and follow it, instead of in-process")
    bf.add_argument("--api-key", help="bearer key when the service sets LOOKALIKE_API_KEY")
    bf.add_argument("--poll-s", type=float, default=1.0, help=argparse.SUPPRESS)
    bf.set_defaults(run=_models_backfill)
    cmp = models.add_parser("compare", help="compare two versions' look-alike lists on a sample of items")
    cmp.add_argument("v1")
    cmp.add_argument("v2")
    cmp.add_argument("--sample", type=int, default=200, help="items sampled (seeded)")
    cmp.add_argument("--seed", type=int, default=0)
    cmp.add_argument("--k", type=int, default=10)
    cmp.add_argument("--url", help="ask a running service instead of opening the store in-process")
    cmp.add_argument("--json", action="store_true", help="the report as JSON")
    cmp.set_defaults(run=_models_compare)


# ---- in-process, or --url a running service; `lookalike models ...`: one small function per subcommand ---------


async def _call(
    args: argparse.Namespace,
    in_process: Callable[[Any], Awaitable[Any]],
    method: str,
    path: str,
    params: dict[str, Any] | None = None,
) -> int:
    """Run one command in-process (`in_process(service)`) or as `method path` against --url; print the JSON answer."""
    if args.url:
        api_key = getattr(args, "api_key", None)  # reads (`similar`) take no key
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        async with httpx.AsyncClient(base_url=args.url, headers=headers, timeout=120) as client:
            response = await client.request(method, path, params=params)
        print(json.dumps(response.json(), indent=2))
        return 0 if response.status_code < 300 else 1
    from app.service.runtime import running_service

    async with running_service(load_settings()) as service:
        try:
            body = await in_process(service)
        except LookalikeError as exc:
            return _print_error(exc)
    print(json.dumps(body.model_dump(mode="json"), indent=2))
    return 0


async def _models_list(args: argparse.Namespace) -> int:
    return await _call(args, lambda service: service.list_models(), "GET", "/models")


async def _models_promote(args: argparse.Namespace) -> int:
    path, params = f"/models/{args.version}/promote", {"force": "true"} if args.force else None
    return await _call(args, lambda service: service.promote(args.version, args.force), "POST", path, params)


async def _models_retire(args: argparse.Namespace) -> int:
    return await _call(args, lambda service: service.retire(args.version), "DELETE", f"/models/{args.version}")


def _models_parser(sub: Any) -> None:
    """`lookalike models SUBCOMMAND`: each subcommand sets `run` (an async function of the args)."""
    models = sub.add_parser("models", help="model versions: list, promote, retire, backfill, compare")
    msub = models.add_subparsers(dest="models_command", required=True)

    def add(name: str, run: Callable[[argparse.Namespace], Awaitable[int]], help: str) -> argparse.ArgumentParser:
        p = msub.add_parser(name, help=help)
        p.add_argument("--url", help="a running service (e.g. http://127.0.0.1:8000) instead of in-process")
        p.add_argument("--api-key", help="bearer key when the service sets LOOKALIKE_API_KEY")
        p.set_defaults(run=run)
        return p

    add("list", _models_list, "the collection's model versions, their state and coverage")
    promote = add("promote", _models_promote, "make VERSION serve /similar (roll back: promote the old one)")
    promote.add_argument("version")
    promote.add_argument("--force", action="store_true", help="promote although items lack VERSION's vector")
    retire = add("retire", _models_retire, "drop a non-serving VERSION's vectors")
    retire.add_argument("version")
    add_models_backfill_compare(msub)


# ---- `lookalike experiments ...`: list, report (in-process, or --url a running service), import ------------------


async def _http(args: argparse.Namespace, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    async with httpx.AsyncClient(base_url=args.url, headers=headers, timeout=300) as client:
        return await client.get(path, params=params)


@asynccontextmanager
async def _registry() -> AsyncIterator[tuple[Any, Any]]:
    """(experiment registry, settings) from the collection's store, opened in-process."""
    from app.service.experiments import experiment_registry
    from app.service.runtime import running_service

    settings = load_settings()
    async with running_service(settings) as service:
        yield experiment_registry(settings, service.store), settings


def _print_error(exc: LookalikeError) -> int:
    print(json.dumps(ErrorBody(error=ErrorDetail.of(exc)).model_dump(), indent=2))
    return 1


async def _experiments_list(args: argparse.Namespace) -> int:
    if args.url:
        response = await _http(args, "/experiments")
        print(json.dumps(response.json(), indent=2))
        return 0 if response.status_code == 200 else 1
    async with _registry() as (registry, _):
        found = await asyncio.to_thread(registry.experiments)
    print(json.dumps({"experiments": [e.model_dump(mode="json") for e in found]}, indent=2))
    return 0


async def _experiments_report(args: argparse.Namespace) -> int:
    if args.url:
        response = await _http(args, f"/experiments/{args.name}/report", {"format": args.format})
        ok = response.status_code == 200
        print(json.dumps(response.json(), indent=2) if args.format == "json" or not ok else response.text)
        return 0 if ok else 1
    from app.experiments.report import render, report_from_log

    async with _registry() as (registry, settings):
        try:
            experiment = await asyncio.to_thread(registry.get, args.name)
        except LookalikeError as exc:
            return _print_error(exc)
    report = await asyncio.to_thread(report_from_log, experiment, settings.events_root())
    print(json.dumps(report, indent=2) if args.format == "json" else render(report, args.format))
    return 0


async def _experiments_import(args: argparse.Namespace) -> int:
    """Checks tokens with this data dir's events secret and writes under LOOKALIKE_EVENTS_PATH (no server needed)."""
    from app.experiments.importer import import_events
    from app.experiments.tokens import AttributionTokens
    from app.service.experiments import events_secret

    settings = load_settings()
    tokens = AttributionTokens(events_secret(settings), max_age_s=settings.events_max_age_s)
    try:
        result = await asyncio.to_thread(import_events, args.file, settings.events_root(), tokens)
    except LookalikeError as exc:
        return _print_error(exc)
    summary = {"rows": result.rows, "accepted": result.accepted, "rejected": dict(result.rejected)}
    print(json.dumps(summary | {"file": str(result.file) if result.file else None}, indent=2))
    return 0


def _experiments_parser(sub: Any) -> None:
    """`lookalike experiments SUBCOMMAND`: each subcommand sets `run` (an async function of the args)."""
    experiments = sub.add_parser("experiments", help="A/B experiments: list, report, import events")
    esub = experiments.add_subparsers(dest="experiments_command", required=True)

    def add(name: str, run: Callable[[argparse.Namespace], Awaitable[int]], help: str) -> argparse.ArgumentParser:
        p = esub.add_parser(name, help=help)
        p.set_defaults(run=run)
        return p

    def remote(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", help="a running service (e.g. http://127.0.0.1:8000) instead of in-process")
        p.add_argument("--api-key", help="bearer key when the service sets LOOKALIKE_API_KEY")

    remote(add("list", _experiments_list, "the collection's experiments and their state"))
    report = add("report", _experiments_report, "an experiment's report: rates, intervals, lift, SRM")
    report.add_argument("name")
    report.add_argument("--format", choices=("table", "json", "html"), default="table")
    remote(report)
    imported = add("import", _experiments_import, "import click/purchase logs (CSV, JSONL or Parquet)")
    imported.add_argument("file")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lookalike", description="Visually similar marketplace listings")
    sub = p.add_subparsers(dest="command", required=True)
    idx = sub.add_parser("index", help="index items from a JSONL file")
    idx.add_argument("file")
    idx.add_argument("--url", help="send to a running service (e.g. http://127.0.0.1:8000) instead of in-process")
    idx.add_argument("--api-key", help="bearer key when the service sets LOOKALIKE_API_KEY")
    idx.add_argument("--batch-size", type=int, default=64, choices=range(1, BATCH_MAX + 1), metavar="1..256")
    sim = sub.add_parser("similar", help="print the look-alikes of an item")
    sim.add_argument("item_id")
    sim.add_argument("--k", type=int, default=10)
    sim.add_argument("--category")
    sim.add_argument("--include-sold", action="store_true")
    sim.add_argument("--model-version", help="rank with this active model version (default: the serving one)")
    sim.add_argument("--url", help="ask a running service instead of opening the store in-process")
    _models_parser(sub)
    _experiments_parser(sub)
    sub.add_parser("serve", help="run the HTTP service (same as python -m app)")
    demo = sub.add_parser("demo", help="generated catalog + photo server + service, indexed: see the web page")
    demo.add_argument("--items", type=int, default=200, help="catalog size (at least 8)")
    demo.add_argument("--port", type=int, default=8000, help="the service's port on 127.0.0.1")
    demo.add_argument("--data", default="data/demo", help="where the catalog and the models are cached")
    demo.add_argument("--quick", action="store_true", help="no fine-tune: the configured (or a random) model only")
    demo.add_argument("--steps", type=int, default=150, help="fine-tuning steps (on --items 200, about a minute)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "serve":
        from app.__main__ import main as serve

        return serve()
    if args.command == "demo":
        if args.items < 8:
            print("lookalike: --items must be at least 8", file=sys.stderr)
            return 2
        from app.demo import run_demo

        try:
            return run_demo(args.items, args.port, Path(args.data), quick=args.quick, steps=args.steps)
        except (SettingsError, RuntimeError, ImportError) as exc:
            print(f"lookalike demo: {exc}", file=sys.stderr)
            return 2
    try:
        runner = {"index": _index, "similar": _similar}.get(args.command) or args.run  # groups set `run`
        return asyncio.run(runner(args))
    except (LookalikeError, LookalikeCommandError) as exc:
        print(f"lookalike: {exc}", file=sys.stderr)
        return 1
    except SettingsError as exc:
        print(f"lookalike: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"lookalike: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
