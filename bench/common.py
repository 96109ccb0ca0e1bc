"""Shared helpers for the bench/ scripts: timing, percentiles, tables/JSON, cached models, a load generator.

The live service (`running_service`) is in bench/live.py, shared with the tests.

Everything a script writes (exported random-weight models, loaded stores, service logs) goes under
`.bench-cache/` in the project root (or $BENCH_CACHE_DIR), a folder that ignores itself for git (it holds
its own .gitignore).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import math
import os
import platform
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.core.model_contract import ModelContractError, read_model_file

ROOT = Path(__file__).resolve().parents[1]
# BENCH_CACHE_DIR moves the cache (the test suite points it at a temporary folder).
CACHE = Path(os.environ.get("BENCH_CACHE_DIR") or ROOT / ".bench-cache")


# ---------------------------------------------------------------- cache and models


def cache_dir(*parts: str) -> Path:
    """A folder under .bench-cache/ (created, and the cache root made to ignore itself for git)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    ignore = CACHE / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# benchmark artefacts, never committed\n*\n", encoding="utf-8")
    path = CACHE.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cached_model(config: str, precision: str = "fp32", seed: int = 0) -> Path:
    """A random-weight SigLIP exported by the real export path (parity gate included), made once.

    A cached file that no longer follows the model contract (made by an older export) is made again.
    """
    path = cache_dir("models") / f"siglip-{config}-{precision}-seed{seed}.onnx"
    if path.is_file():
        try:
            read_model_file(path)
        except ModelContractError as e:
            log(f"{e}; exporting it again")
            path.unlink()
    if not path.is_file():
        from models.export import export_model  # torch + transformers: only when a model must be made

        log(f"exporting the {config} model ({precision}) once to {path} ...")
        export_model(path, config=config, precision=precision, seed=seed)
    return path


# ---------------------------------------------------------------- machine and output


def log(message: str) -> None:
    """Progress goes to stderr so that stdout holds only the table or the JSON object."""
    print(message, file=sys.stderr, flush=True)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    load1, load5, _ = os.getloadavg()
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count() or 0,
        "loadavg_1m": round(load1, 2),
        "loadavg_5m": round(load5, 2),
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
    except ImportError:
        pass
    return info


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds (the test suite's mode)")
    return parser


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if isinstance(value, bool) else "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value == 0 or abs(value) >= 100:
            return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 0.01 else f"{value:.2f}"
    return str(value)


def _fmt_cell(column: str, value: Any) -> str:
    if "cosine" in column and isinstance(value, float):
        return f"{value:.6f}"
    return _fmt(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, title: str | None = None) -> str:
    """A plain fixed-width table (Markdown-compatible pipes) of the given rows."""
    if not rows:
        return f"{title}\n(no rows)\n" if title else "(no rows)\n"
    cols = list(columns or rows[0].keys())
    cells = [[_fmt_cell(c, r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    out = io.StringIO()
    if title:
        out.write(f"{title}\n")
    out.write("| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)) + " |\n")
    out.write("|" + "|".join("-" * (w + 2) for w in widths) + "|\n")
    for row in cells:
        out.write("| " + " | ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) + " |\n")
    return out.getvalue()


def emit(result: dict[str, Any], as_json: bool, render: Callable[[dict[str, Any]], str]) -> None:
    """Print the result: one JSON object (--json) or the script's tables."""
    if as_json:
        print(json.dumps(result, indent=1, sort_keys=False, default=_json_default))
    else:
        print(render(result))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def machine_line(machine: dict[str, Any]) -> str:
    return (
        f"machine: {machine['cpu']}, {machine['cores']} cores, load avg {machine['loadavg_1m']} (1 min), "
        f"{machine['date']}"
    )


# ---------------------------------------------------------------- timing


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation; nan for no samples."""
    if not samples:
        return float("nan")
    return float(np.percentile(np.asarray(samples, dtype=np.float64), q))


def summary_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """Latency summary in milliseconds from samples in seconds."""
    ms = [s * 1e3 for s in samples_s]
    return {
        "p50_ms": round(percentile(ms, 50), 3),
        "p90_ms": round(percentile(ms, 90), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3) if ms else float("nan"),
        "mean_ms": round(float(np.mean(ms)), 3) if ms else float("nan"),
    }


def time_calls(fn: Callable[[], object], *, count: int, max_s: float, warmup: int = 3) -> list[float]:
    """Call fn until `count` timed calls or `max_s` seconds (at least one timed call); seconds per call."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    deadline = time.perf_counter() + max_s
    while len(samples) < count and (not samples or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))


# ---------------------------------------------------------------- a lean HTTP/1.1 client


class KeepAliveClient:
    """Minimal blocking HTTP/1.1 keep-alive client for GET over loopback.

    Much cheaper per request than a general client, so on a 2-core machine the load generator takes
    as little CPU as possible from the server it measures. Handles Content-Length bodies only
    (what uvicorn sends for JSON answers).
    """

    def __init__(self, host: str, port: int, timeout_s: float = 30.0) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._sock: socket.socket | None = None
        self._buf = b""

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = b""
        return sock

    def get(self, path: str) -> tuple[int, bytes]:
        if self._sock is None:
            self._sock = self._connect()
        request = f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode()
        try:
            self._sock.sendall(request)
            return self._read_response()
        except (OSError, ConnectionError):
            self.close()
            raise

    def _read_response(self) -> tuple[int, bytes]:
        assert self._sock is not None
        while b"\r\n\r\n" not in self._buf:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self._buf += chunk
        head, _, rest = self._buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(rest) < length:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection mid-body")
            rest += chunk
        body, self._buf = rest[:length], rest[length:]
        return status, body

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


@dataclass
class LoadResult:
    concurrency: int
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    wall_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        done = len(self.latencies_s)
        return {
            "concurrency": self.concurrency,
            "requests": done,
            "errors": self.errors,
            "rps": round(done / self.wall_s, 1) if self.wall_s > 0 else 0.0,
            **summary_ms(self.latencies_s),
        }


def closed_loop(
    request: Callable[[int, int], bool],
    *,
    concurrency: int,
    total: int,
    max_s: float,
    warmup_per_worker: int = 0,
    progress: str | None = None,
) -> LoadResult:
    """`concurrency` workers each send their next request as soon as the previous answer arrived.

    `request(worker, i)` does one request and returns True for a good answer. Bounded by `total`
    requests and by `max_s` seconds, whichever comes first.
    """
    from tqdm import tqdm

    result = LoadResult(concurrency)
    lock = threading.Lock()
    counter = iter(range(total))
    start = threading.Barrier(concurrency + 1)
    deadline = [math.inf]
    bar = tqdm(total=total, desc=progress, file=sys.stderr, leave=False, disable=progress is None)

    def worker(w: int) -> None:
        for j in range(warmup_per_worker):
            with suppress(Exception):
                request(w, -1 - j)
        start.wait()
        while time.perf_counter() < deadline[0]:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t0 = time.perf_counter()
            try:
                ok = request(w, i)
            except Exception:
                ok = False
            elapsed = time.perf_counter() - t0
            with lock:
                if ok:
                    result.latencies_s.append(elapsed)
                else:
                    result.errors += 1
                bar.update(1)

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(concurrency)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    deadline[0] = t0 + max_s
    for t in threads:
        t.join()
    result.wall_s = time.perf_counter() - t0
    bar.close()
    return result


def get_loop(
    host: str,
    port: int,
    paths: Sequence[str],
    *,
    concurrency: int,
    total: int,
    max_s: float,
    warmup_per_worker: int = 0,
    progress: str | None = None,
) -> LoadResult:
    """`closed_loop` of GETs of `paths` in turn (200 = a good answer), one keep-alive connection per worker."""
    clients = [KeepAliveClient(host, port) for _ in range(concurrency)]

    def request(worker: int, i: int) -> bool:
        status, _ = clients[worker].get(paths[i % len(paths)])
        return status == 200

    try:
        return closed_loop(
            request,
            concurrency=concurrency,
            total=total,
            max_s=max_s,
            warmup_per_worker=warmup_per_worker,
            progress=progress,
        )
    finally:
        for c in clients:
            c.close()
