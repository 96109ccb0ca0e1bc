"""The live-server helpers the tests use, shared with the benchmarks (bench/live.py)."""

from bench.live import ROOT, LiveServer, free_port, live_server, wait_ready

__all__ = ["ROOT", "LiveServer", "free_port", "live_server", "wait_ready"]
