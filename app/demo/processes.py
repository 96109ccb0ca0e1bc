"""The demo's child processes: each in its own process group, every one stopped whenever the demo ends.

Ctrl-C at a terminal reaches only the foreground process group (the demo itself), so a child never sees
it: the demo stops each child, SIGTERM to the child's whole group and SIGKILL to what is left after a grace
period. SIGTERM to the demo counts as Ctrl-C. Only the first of those signals interrupts (a second one
cannot cut a stop short), and one that arrives while a child is being started waits until the child is
tracked, so no child escapes the stop.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from types import FrameType
from typing import IO, Any

STOP_GRACE_S = 20.0  # the service drains in-flight requests on SIGTERM; a training tool just exits
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def say(message: str) -> None:
    print(f"lookalike demo: {message}", file=sys.stderr, flush=True)


class DemoError(Exception):
    """A step of the demo failed; the message is the one line the demo prints."""


class Interrupts:
    """SIGINT and SIGTERM raise KeyboardInterrupt once; later ones are ignored (the stop is under way)."""

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}
        self._held = 0
        self._pending = False
        self.requested = False

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            return
        if self._held:
            self._pending = True
            return
        self.requested = True
        raise KeyboardInterrupt

    @contextmanager
    def held(self) -> Iterator[None]:
        """Within this block a stop signal waits; it interrupts right after the block."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
            if not self._held and self._pending and not self.requested:
                self._pending = False
                self.requested = True
                raise KeyboardInterrupt


def signal_group(pgid: int, sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):  # the group is gone already
        os.killpg(pgid, sig)


def stop_group(process: subprocess.Popen[Any], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM to the process's group, SIGKILL after `grace_s`; then SIGKILL to anything left in the group."""
    if process.poll() is None:
        signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            signal_group(process.pid, signal.SIGKILL)
            process.wait()
    signal_group(process.pid, signal.SIGKILL)  # what the child itself started and left behind


class Children:
    """The demo's child processes, each the leader of its own process group."""

    def __init__(self, interrupts: Interrupts) -> None:
        self._interrupts = interrupts
        self._live: list[subprocess.Popen[Any]] = []

    def start(
        self, command: list[str], *, env: dict[str, str] | None = None, stdout: IO[Any] | int | None = None
    ) -> subprocess.Popen[Any]:
        """Start `command` in a process group of its own; its stdout goes to stderr unless given (the demo's
        own stdout carries only the scores and the page's address)."""
        out = stdout if stdout is not None else sys.stderr.fileno()
        with self._interrupts.held():
            process = subprocess.Popen(command, env=env, stdout=out, process_group=0)
            self._live.append(process)
        return process

    def stop(self, process: subprocess.Popen[Any]) -> None:
        with self._interrupts.held():
            stop_group(process)
            if process in self._live:
                self._live.remove(process)

    def stop_all(self) -> None:
        """Stop every child, newest first; safe to call again (stopped children are forgotten)."""
        for process in reversed(list(self._live)):
            stop_group(process)
            self._live.remove(process)

    def tool(self, module: str, *args: str, output: Path | None = None) -> None:
        """Run `python -m module args` (a models/ tool, the `train` extra) to its end; its stdout to `output`."""
        with output.open("wb") if output else nullcontext() as out:
            process = self.start([sys.executable, "-m", module, *args], stdout=out)
            try:
                code = process.wait()
            finally:
                self.stop(process)
        if code != 0:
            raise DemoError(
                f"`python -m {module}` exited with {code} (its messages are above); "
                "the demo needs the train extra: pip install -e '.[train]'"
            )
