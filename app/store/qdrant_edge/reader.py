"""A reader child of the embedded store: HNSW searches of sealed shards, off the server's GIL.

    python -m app.store.qdrant_edge.reader --fd FD --slot N --parent-pid PID

Qdrant Edge holds the GIL during a query, so one serving process searches on one core. A reader
process loads *views* of sealed shards (their segment files hardlinked into `readers/<shard>/` with an
empty WAL, app/store/qdrant_edge/readers.py; reader N loads copy `<view>/N/`: one process per
directory, because of the WAL lock) and answers search batches sent over the socket FD:
each message is a pickled request, each answer a pickled list (see `handle`). A view is loaded on its
first search and closed when a request names it in `drops`. The reader only reads: it never writes
into the shared segment files (tests/integration/test_store_readers.py hashes them).

It dies with the server (PR_SET_PDEATHSIG, like the builder) and exits when its socket closes.
"""

from __future__ import annotations

import argparse
import pickle
import socket
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_edge import EdgeShard, Filter, HasIdCondition, QueryBatchRequest, SearchParams

from app.store import photos
from app.store.qdrant_edge import page_cache
from app.store.qdrant_edge.builder import IndexOptions, _die_with_parent, record_vectors
from app.store.qdrant_edge.filters import build_filter
from app.store.qdrant_edge.queries import Record, decode, listing_query
from app.store.versions import photo_rows

# One shard's part of a request: (view name, view path, named vector, limit, settle, where, excluded ids,
# float32 query rows as bytes, dim). `where` is (query item payload, SimilarFilters) or None; `settle`
# (photos.Settle, or None) lets a one-photo query's answer carry fewer records (see `handle`).
ShardSearch = tuple[str, str, str, int, Any, Any, list[str], bytes, int]
# per query (id, score); records; settled: only the ids with a record can be in the top k
ShardAnswer = tuple[list[list[tuple[str, float]]], dict[str, Record], bool]


def search_filter(where: Any, exclude: list[str]) -> Filter | None:
    """The filter of GET /similar (filters.build_filter), minus the points `exclude` names."""
    base = build_filter(*where) if where is not None else None
    if not exclude:
        return base
    must_not = [HasIdCondition(set(exclude)), *((base.must_not or []) if base is not None else [])]
    return Filter(must=base.must if base is not None else None, must_not=must_not)


def requests(
    using: str, limit: int, where: Any, exclude: list[str], rows: bytes, dim: int, params: SearchParams
) -> QueryBatchRequest:
    vectors = np.frombuffer(rows, dtype=np.float32).reshape(-1, dim)
    return QueryBatchRequest(queries=[listing_query(vectors, using, limit, search_filter(where, exclude), params)])


class Reader:
    def __init__(self, slot: int, params: SearchParams) -> None:
        self.slot = slot
        self.params = params
        self.views: dict[str, EdgeShard] = {}
        self.root: Path | None = None  # the folder of every view (readers/)
        # our mappings of the views' originals and payloads, read again when views change (never used past a
        # view's close: page_cache.py)
        self.mappings: list[tuple[int, int]] | None = []
        self.turn = 0  # which part of them the next tidy() releases

    def handle(self, drops: list[str], searches: list[ShardSearch]) -> list[ShardAnswer]:
        """Close the dropped views, then run each shard's batch: per shard, per query, (point id, score),
        and the records of the best `limit` points (payload, photo rows of the vector searched), so that the
        server need not read them itself: retrieving vectors makes Python floats, costly under its GIL. With
        a `settle`, only the best `settle.k` when they hold this shard's exact top k (then `settled`: the
        server may leave the other ids out), else all of them."""
        for name in drops:
            view = self.views.pop(name, None)
            if view is not None:
                view.close()
                self.mappings = None
        out = []
        for name, path, using, limit, settle, where, exclude, rows, dim in searches:
            view = self.views.get(name)
            if view is None:
                view = self.views[name] = EdgeShard.load(f"{path}/{self.slot}")
                self.root, self.mappings = Path(path).parent, None
                # warm the page cache for re-scores and payloads; off this thread: readahead of GBs takes seconds
                threading.Thread(target=page_cache.prefetch, args=(Path(path, str(self.slot)),), daemon=True).start()
            answers = view.query_batch(requests(using, limit, where, exclude, rows, dim, self.params))
            scored = [[(str(p.id), float(p.score)) for p in answer] for answer in answers]
            best: dict[str, float] = {}
            for answer in scored:
                for pid, score in answer:
                    best[pid] = max(score, best.get(pid, score))
            order = photos.shortlist(best, limit)
            if settle is None:
                out.append((scored, records(view, order, using), False))
                continue
            head, rest = order[: settle.k], order[settle.k :]
            found = records(view, head, using)
            query = np.frombuffer(rows, dtype=np.float32).reshape(-1, dim)
            settled = not rest or settle.final(query, [decode(r, dim) for r in found.values()], best[rest[0]])
            out.append((scored, found if settled else found | records(view, rest, using), settled))
        return out

    def tidy(self) -> None:
        """After each answer: unmap a part of the originals and payloads the searches faulted in
        (page_cache.py), so the reader's memory stays the int8 copy, the graph and the payload indexes."""
        if self.root is None:
            return
        if self.mappings is None:  # a view was loaded or closed since: read our mappings again (~2 ms)
            self.mappings = page_cache.mapped([self.root])
        self.turn = (self.turn + 1) % page_cache.RELEASE_PARTS
        if not page_cache.release(self.mappings[self.turn :: page_cache.RELEASE_PARTS]):
            self.mappings = None


def records(view: EdgeShard, points: list[str], using: str) -> dict[str, Record]:
    """{point id: (payload, photo rows as float32 bytes, photo count)} of `points` that have `using`."""
    found: dict[str, Record] = {}
    for r in view.retrieve(points, True, True) if points else []:
        rows = photo_rows(record_vectors(r.vector).get(using))
        if rows is not None and r.payload:
            found[str(r.id)] = (dict(r.payload), np.ascontiguousarray(rows, dtype=np.float32).tobytes(), len(rows))
    return found


def serve(conn: Connection, reader: Reader) -> None:
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the server closed the socket (or died)
        drops, searches = pickle.loads(message)
        try:
            reply: Any = ("ok", reader.handle(drops, searches))
        except Exception:  # answered, not fatal: the server searches in-process instead
            reply = ("error", traceback.format_exc(limit=3))
        try:
            conn.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:
            return  # the server closed the socket while this search ran
        reader.tidy()  # after the answer: off the request's latency


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.store.qdrant_edge.reader", description=__doc__.split("\n")[0])
    parser.add_argument("--fd", type=int, required=True, help="the socket to the server")
    parser.add_argument("--slot", type=int, required=True, help="which copy of each view to load")
    parser.add_argument("--parent-pid", type=int, default=0, help="exit when this process dies")
    parser.add_argument("--index", type=IndexOptions.from_json, default=IndexOptions(), help="search options (JSON)")
    args = parser.parse_args(argv)
    _die_with_parent(args.parent_pid)
    sock = socket.socket(fileno=args.fd)
    serve(Connection(sock.detach()), Reader(args.slot, args.index.search_params()))
    return 0  # no close() of the views: exiting never writes anything into the shared files


if __name__ == "__main__":
    sys.exit(main())
