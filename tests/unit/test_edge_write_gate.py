"""WriteGate: many writers share it; freeze/swap/close take it alone and are not starved by writers."""

from __future__ import annotations

import threading
import time

from app.store.qdrant_edge.write_gate import WriteGate

WAIT_S = 10.0


def test_shared_holders_overlap() -> None:
    gate = WriteGate()
    inside = threading.Barrier(3, timeout=WAIT_S)  # three writers must be inside at once to pass

    def writer() -> None:
        with gate.shared():
            inside.wait()

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert not inside.broken and all(not t.is_alive() for t in threads)


def test_exclusive_waits_for_shared_and_then_blocks_new_shared() -> None:
    gate = WriteGate()
    events: list[str] = []
    exclusive_waiting = threading.Event()
    late_writer_started = threading.Event()

    def exclusive() -> None:
        exclusive_waiting.set()
        with gate.exclusive():
            events.append("exclusive")

    def late_writer() -> None:
        late_writer_started.set()
        with gate.shared():
            events.append("late writer")

    with gate.shared():
        t_ex = threading.Thread(target=exclusive)
        t_ex.start()
        assert exclusive_waiting.wait(WAIT_S)
        t_ex.join(0.2)
        assert t_ex.is_alive() and events == []  # a writer is inside: the exclusive holder waits
        t_late = threading.Thread(target=late_writer)
        t_late.start()
        assert late_writer_started.wait(WAIT_S)
        t_late.join(0.2)
        # exclusive-preferring: a writer arriving while an exclusive holder waits queues behind it
        assert t_late.is_alive() and events == []
        events.append("first writer leaves")
    t_ex.join(WAIT_S)
    t_late.join(WAIT_S)
    assert events == ["first writer leaves", "exclusive", "late writer"]


def test_exclusive_holders_exclude_each_other() -> None:
    gate = WriteGate()
    second_inside = threading.Event()
    second_trying = threading.Event()

    def second() -> None:
        second_trying.set()
        with gate.exclusive():
            second_inside.set()

    with gate.exclusive():
        t = threading.Thread(target=second)
        t.start()
        assert second_trying.wait(WAIT_S)
        # the first holder is still inside: the second one must not get in however long it tries
        assert not second_inside.wait(0.2)
    assert second_inside.wait(WAIT_S)  # and it does once the first one leaves
    t.join(WAIT_S)


def test_exclusive_holders_never_overlap_under_contention() -> None:
    gate = WriteGate()
    inside = 0
    most = 0
    lock = threading.Lock()

    def worker() -> None:
        nonlocal inside, most
        for _ in range(50):
            with gate.exclusive():
                with lock:
                    inside += 1
                    most = max(most, inside)
                time.sleep(0.0005)  # give the other threads the CPU while inside: they would enter if they could
                with lock:
                    inside -= 1

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert most == 1 and inside == 0 and not any(t.is_alive() for t in threads)
