"""Memory of a burst of large uploads: peak RSS of a real service hit by N concurrent large image writes.

    python -m bench.burst_memory [--count 256] [--mb 10] [--form multipart|base64] [--json] [--quick]

One real service (`python -m app`, embedded store, CPU, the tiny model) on loopback; N clients post at
the same moment one large photo-like image each (a noise JPEG of about --mb MB, made at run time, a
few distinct ones reused), as multipart uploads or as JSON with image_base64. Reported: the service's
resident memory before the burst and its peak (VmHWM, /proc), how many writes were answered 2xx, 429
or anything else (connection errors included), and the wall time of the burst. Every setting is the
default except REQUEST_TIMEOUT_S (300 s, so that no answer is a 429 for waiting; only admission sheds).

The script only uses bench/common.py helpers that have not changed, so the same file can run from an
older checkout for a before/after comparison (copy it into that tree's bench/ and run it there).
"""

from __future__ import annotations

import asyncio
import base64
import io
import shutil
import time
from collections import Counter
from typing import Any

import numpy as np

from bench.common import (
    base_parser,
    cache_dir,
    cached_model,
    emit,
    log,
    machine_info,
    machine_line,
    table,
)
from bench.live import process_memory, running_service

DISTINCT_IMAGES = 4  # the service does not care that bytes repeat; the client need not hold N images


def noise_jpeg(seed: int, megabytes: float) -> bytes:
    """A JPEG of about `megabytes` MB: noise compresses badly, about 1.15 bytes per pixel at quality 95."""
    from PIL import Image

    side = int((megabytes * 1e6 / 1.15) ** 0.5)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


async def burst(url: str, images: list[bytes], count: int, form: str, timeout_s: float) -> dict[str, Any]:
    import httpx

    texts = [base64.b64encode(img).decode() for img in images] if form == "base64" else []
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    statuses: Counter[str] = Counter()
    seconds: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as client:
        start = asyncio.Event()

        async def one(i: int) -> None:
            item_id = f"burst-{i}"
            await start.wait()
            began = time.perf_counter()
            try:
                if form == "multipart":
                    files = {"image": (f"{item_id}.jpg", images[i % len(images)], "image/jpeg")}
                    response = await client.post("/items", data={"item_id": item_id}, files=files)
                else:
                    body = {"item_id": item_id, "image_base64": texts[i % len(texts)]}
                    response = await client.post("/items", json=body)
                code = response.status_code
                statuses["2xx" if 200 <= code < 300 else str(code)] += 1
            except httpx.HTTPError as exc:
                statuses[f"error:{type(exc).__name__}"] += 1
            seconds.append(time.perf_counter() - began)

        tasks = [asyncio.create_task(one(i)) for i in range(count)]
        await asyncio.sleep(0.1)  # every task waits at the start line
        began = time.perf_counter()
        start.set()
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - began
    return {"statuses": dict(statuses), "wall_s": round(wall, 2), "max_answer_s": round(max(seconds), 2)}


def run(*, count: int, megabytes: float, form: str, quick: bool) -> dict[str, Any]:
    machine = machine_info()
    model = cached_model("tiny")
    log(f"making {DISTINCT_IMAGES} noise JPEGs of about {megabytes} MB ...")
    images = [noise_jpeg(seed, megabytes) for seed in range(DISTINCT_IMAGES)]
    data = cache_dir("burst-memory") / "store"
    shutil.rmtree(data, ignore_errors=True)
    env = {
        "LOOKALIKE_MODEL_PATH": str(model),
        "LOOKALIKE_QDRANT_PATH": str(data),
        "LOOKALIKE_DEVICE": "cpu",
        "LOOKALIKE_REQUEST_TIMEOUT_S": "300",
        "LOOKALIKE_LOG_LEVEL": "warning",
    }
    try:
        with running_service(env, name="burst_memory") as service:
            idle = process_memory(service.process.pid)
            log(f"burst: {count} concurrent {form} writes of {len(images[0]) / 1e6:.1f} MB ...")
            outcome = asyncio.run(burst(service.url, images, count, form, timeout_s=600))
            memory = process_memory(service.process.pid)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    statuses = outcome["statuses"]
    return {
        "benchmark": "burst_memory",
        "quick": quick,
        "machine": machine,
        "count": count,
        "form": form,
        "image_bytes": len(images[0]),
        "idle_rss_bytes": idle.get("rss_bytes", 0),
        "peak_rss_bytes": memory.get("peak_rss_bytes", 0),
        "answered_2xx": statuses.get("2xx", 0),
        "answered_429": statuses.get("429", 0),
        "other": {k: v for k, v in statuses.items() if k not in ("2xx", "429")},
        "wall_s": outcome["wall_s"],
        "max_answer_s": outcome["max_answer_s"],
    }


def render(r: dict[str, Any]) -> str:
    row = {
        "writes": r["count"],
        "form": r["form"],
        "image_MB": round(r["image_bytes"] / 1e6, 1),
        "idle_rss_MB": round(r["idle_rss_bytes"] / 2**20),
        "peak_rss_MB": round(r["peak_rss_bytes"] / 2**20),
        "2xx": r["answered_2xx"],
        "429": r["answered_429"],
        "other": sum(r["other"].values()),
        "wall_s": r["wall_s"],
    }
    return machine_line(r["machine"]) + "\n" + table([row], title="burst of concurrent large uploads")


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=256, help="concurrent writes (default 256)")
    parser.add_argument("--mb", type=float, default=10.0, help="size of each image in MB (default 10)")
    parser.add_argument("--form", choices=("multipart", "base64"), default="multipart")
    args = parser.parse_args()
    count, megabytes = (8, 1.0) if args.quick else (args.count, args.mb)
    emit(run(count=count, megabytes=megabytes, form=args.form, quick=args.quick), args.json, render)


if __name__ == "__main__":
    main()
