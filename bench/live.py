"""Run `python -m app` as a real subprocess on a free loopback port, for the tests and the benchmarks.

Bounded waits everywhere. The server's stdout and stderr go to a log file (a pipe nobody reads would fill
and stall the server); a server that dies before it is ready raises with the tail of that log.

Every process the tests and benchmarks start goes through `start_process` / `run_process`: it leads a
new session, so `stop_process` can stop all it started (its own process groups too, as `lookalike demo`
makes), and `leftover_processes` can tell, at the end of a test run, whether any of it still runs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common import cache_dir

ROOT = Path(__file__).resolve().parents[1]


_SESSIONS: set[int] = set()  # the session ids (= leader pids) of the processes started here


def start_process(command: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
    """`subprocess.Popen` as the leader of a new session, remembered for `leftover_processes`."""
    process = subprocess.Popen(command, start_new_session=True, **popen)
    _SESSIONS.add(process.pid)
    return process


def session_processes(sid: int) -> list[str]:
    """'pid command' of each live (not zombie) process in session `sid`, from /proc (Linux)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
            if fields[0] != "Z" and int(fields[3]) == sid:  # state, ppid, pgrp, session
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{entry.name} {command.strip()[:200]}")
        except (OSError, IndexError, ValueError):  # it ended while we looked
            continue
    return found


def kill_session(sid: int) -> None:
    """SIGKILL to every process still in session `sid` (whatever process group it moved to)."""
    for line in session_processes(sid):
        with suppress(ProcessLookupError, PermissionError):
            os.kill(int(line.split()[0]), signal.SIGKILL)


def stop_process(process: subprocess.Popen[Any], grace_s: float = 30) -> None:
    """SIGTERM to the process's group, SIGKILL after `grace_s`; then SIGKILL to what is left in its session."""
    if process.poll() is None:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    kill_session(process.pid)


def run_process(
    command: Sequence[str],
    *,
    timeout: float = 600,
    input: str | bytes | None = None,
    check: bool = False,
    capture_output: bool = False,
    **popen: Any,
) -> subprocess.CompletedProcess[Any]:
    """`subprocess.run` in a new session: a timeout, an error or Ctrl-C stops everything it started."""
    if input is not None:
        popen["stdin"] = subprocess.PIPE
    if capture_output:
        popen["stdout"] = popen["stderr"] = subprocess.PIPE
    process = start_process(command, **popen)
    try:
        stdout, stderr = process.communicate(input, timeout=timeout)
    finally:
        stop_process(process, grace_s=5)
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    if check:
        result.check_returncode()
    return result


def kill_after(process: subprocess.Popen[str], seconds: float) -> list[str]:
    """The lines a writer printed (its acknowledgements) until `seconds` passed or it ended, then SIGKILL at that
    arbitrary point; the lines it printed before dying are included."""
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
    process.send_signal(signal.SIGKILL)
    rest, _ = process.communicate()
    return lines + rest.splitlines()


def leftover_processes() -> list[str]:
    """The processes started through `start_process` (and theirs) that still run."""
    return [line for sid in sorted(_SESSIONS) for line in session_processes(sid)]


def kill_leftovers() -> list[str]:
    """SIGKILL to every leftover process; returns what was still running."""
    left = leftover_processes()
    for sid in sorted(_SESSIONS):
        kill_session(sid)
    return left


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used so far, from /proc (Linux); 0 elsewhere.

    Unlike latency, CPU time per request hardly changes with other load on the machine, so it is the
    number to compare when the machine is shared.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_memory(pid: int) -> dict[str, int]:
    """Resident set size now and at its peak (VmHWM), from /proc (Linux); empty elsewhere."""
    values: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values["rss_bytes" if key == "VmRSS" else "peak_rss_bytes"] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return values


def proportional_memory(pid: int) -> int:
    """Bytes of `pid`'s resident pages with each shared page split among the processes mapping it (Pss,
    Linux): summed over processes that map the same files, shared pages count once. 0 when unknown."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text(encoding="utf-8").splitlines():
            key, _, rest = line.partition(":")
            if key == "Pss":
                return int(rest.split()[0]) * 1024
    except OSError:
        pass
    return 0


def _tail(log_path: Path | None, process: subprocess.Popen) -> str:
    if log_path is not None and log_path.is_file():
        return log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
    if process.stderr is not None:  # a caller that started the process with a pipe
        out = process.stderr.read()
        return out.decode(errors="replace") if isinstance(out, bytes) else out
    return ""


def wait_ready(url: str, process: subprocess.Popen, timeout_s: float = 90, log_path: Path | None = None) -> None:
    """Poll `url`/readyz until it answers 200; raise if the process exits first or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{_tail(log_path, process)}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url}/readyz did not answer 200 within {timeout_s} s (log: {log_path})")


@dataclass
class LiveServer:
    url: str
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        """Everything the server printed so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def rss_bytes(self) -> dict[str, int]:
        return process_memory(self.process.pid)

    def cpu_s(self) -> float:
        return process_cpu_s(self.process.pid)


@contextmanager
def live_server(
    env: dict[str, str],
    command: list[str] | None = None,
    *,
    log_path: Path | None = None,
    timeout_s: float = 90,
    stop_timeout_s: float = 30,
) -> Iterator[LiveServer]:
    """`python -m app` (or `command`) with the given LOOKALIKE_* settings; stopped by SIGTERM on exit.

    Without `log_path` the log goes to a temporary file, removed afterwards.
    """
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    full_env.update({"LOOKALIKE_HOST": "127.0.0.1", "LOOKALIKE_PORT": str(port), "PYTHONUNBUFFERED": "1", **env})
    with tempfile.TemporaryDirectory(prefix="lookalike-live-") as scratch:
        path = log_path or Path(scratch) / "server.log"
        with open(path, "wb") as out:
            process = start_process(
                command or [sys.executable, "-m", "app"], cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT
            )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, process, timeout_s, path)
            yield LiveServer(url, "127.0.0.1", port, process, path)
        finally:
            stop_process(process, grace_s=stop_timeout_s)


@contextmanager
def running_service(env: dict[str, str], *, name: str, timeout_s: float = 180) -> Iterator[LiveServer]:
    """A benchmark's service: `live_server` with its log kept as .bench-cache/logs/<name>.log."""
    with live_server(env, log_path=cache_dir("logs") / f"{name}.log", timeout_s=timeout_s, stop_timeout_s=60) as server:
        yield server
