"""The live-server and process helpers the tests use, shared with the benchmarks (bench/live.py)."""

from bench.live import (
    ROOT,
    LiveServer,
    free_port,
    kill_after,
    kill_leftovers,
    kill_session,
    leftover_processes,
    live_server,
    run_process,
    session_processes,
    start_process,
    stop_process,
    wait_ready,
)

__all__ = [
    "ROOT",
    "LiveServer",
    "free_port",
    "kill_after",
    "kill_leftovers",
    "kill_session",
    "leftover_processes",
    "live_server",
    "run_process",
    "session_processes",
    "start_process",
    "stop_process",
    "wait_ready",
]
