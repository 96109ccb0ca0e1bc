"""Reads across a snapshot of shards: the candidate listings near some photo vectors, and pages by point id.

Both take the shard list of one `_reading()` snapshot (rank descending), so an item that a crash left
in two shards counts once, with its newest copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from qdrant_edge import (
    FieldCondition,
    Filter,
    HasVectorCondition,
    MatchValue,
    QueryBatchRequest,
    ScrollRequest,
    SearchParams,
)

from app.core.errors import ModelNotReady
from app.store import photos
from app.store.base import Hit, ItemPage, SimilarFilters, point_id
from app.store.qdrant_edge.builder import record_vectors
from app.store.qdrant_edge.filters import build_filter, with_ids
from app.store.qdrant_edge.queries import decode, listing_query
from app.store.qdrant_edge.readers import ReaderPool
from app.store.qdrant_edge.shard import Shard
from app.store.versions import StoredVersion, photo_rows


@dataclass(frozen=True)
class Searching:
    """How shards are searched: `params` (hnsw_ef, the int8 re-score; plain hot shards ignore them) and the
    reader processes that take sealed shards' searches off this process's GIL (None: all in-process)."""

    params: SearchParams | None = None
    readers: ReaderPool | None = None


Where = tuple[dict[str, Any], SimilarFilters]  # filters.build_filter's arguments: picklable, unlike a Filter
Answers = list[list[tuple[str, float]]]  # per query: (point id, score), best first
Candidate = tuple[dict[str, Any], np.ndarray]  # a listing's payload and photo rows [P, dim]


def candidates(
    shards: list[Shard],
    queries: list[Any],
    limit: int,
    where: Where | None,
    using: str = "",
    leave_out: str | None = None,
    how: Searching = Searching(),
    settle: photos.Settle | None = None,
) -> list[Candidate]:
    """The `limit` listings nearest to the query vectors (one MaxSim query: sum over the query rows of each
    one's closest photo) over all shards, with their payload and photo rows [P, dim] of `using`, for an exact
    re-score (app/store/photos.py); with `settle` (a one-photo query) only the best `settle.k` when that makes
    the top k final.
    `where`: (query item payload, SimilarFilters) for filters.build_filter, or None; `leave_out`: a point id
    never returned (the query item of GET /similar). Sealed shards are searched by `how.readers` when they can."""
    rows = np.asarray(queries, dtype=np.float32).reshape(len(queries), -1)
    left_out = leave_out is not None  # room for the left-out point, dropped below
    # a reader's shard may hold the left-out point: its check counts one more
    shard_settle = settle._replace(k=settle.k + left_out) if settle is not None else None
    answers, records = _search(shards, rows, limit + left_out, shard_settle, where, using, how)
    found: dict[str, tuple[float, Shard]] = {}  # point id -> (best score of any query, newest shard holding it)
    for s in shards:
        for answer in answers.get(s.name, ()):
            for pid, score in answer:
                best, holder = found.get(pid, (score, s))
                found[pid] = (max(best, score), holder)
    found.pop(leave_out or "", None)
    order = photos.shortlist({pid: score for pid, (score, _) in found.items()}, limit)
    head, rest = (order, []) if settle is None else (order[: settle.k], order[settle.k :])
    out = _read(head, found, records, using)
    if rest and (settle is None or not settle.final(rows, out, found[rest[0]][0])):
        out += _read(rest, found, records, using)
    return out


def _read(
    points: list[str], found: dict[str, tuple[float, Shard]], records: dict[str, Candidate], using: str
) -> list[Candidate]:
    """The candidates' payloads and photo rows: as a reader sent them, else read here from their shard."""
    by_shard: dict[int, tuple[Shard, list[str]]] = {}
    for point in points:
        s = found[point][1]
        by_shard.setdefault(id(s), (s, []))[1].append(point)
    out = []  # an item deleted between the query and this read is left out, as if gone before
    for s, held in by_shard.values():
        # A reader's record of a point is current unless a write touched it since (then read it here).
        sent = [p for p in held if p in records and p not in s.touched]
        out += [records[p] for p in sent]
        rest = [p for p in held if p not in set(sent)]
        for r in s.edge.retrieve(rest, True, True) if rest else []:
            rows = photo_rows(record_vectors(r.vector).get(using))
            if rows is not None and r.payload:
                out.append((dict(r.payload), rows))
    return out


def _search(
    shards: list[Shard],
    rows: np.ndarray,
    limit: int,
    settle: photos.Settle | None,
    where: Where | None,
    using: str,
    how: Searching,
) -> tuple[dict[str, Answers], dict[str, Candidate]]:
    """Each shard's answers (per query: (point id, score), best first; none for a shard known empty), and the
    records readers sent (all their answer's, or with `settle` their shard's exact top k: then the rest of
    their answer is left out, since it cannot make the top k). The sealed shards that have a reader view are sent to
    one reader (minus their touched points) while this thread searches the others and the touched points; a
    reader that fails is made up for in-process."""
    base = build_filter(*where) if where is not None else None
    readers, params = how.readers, how.params
    offload: list[tuple[Shard, list[str]]] = []
    searches = []
    for s in shards if readers is not None else []:
        touched = list(s.touched)  # one C-level copy: atomic under the GIL
        view = readers.view(s.name, using, s.points, len(touched)) if s.role == "sealed" else None
        if view is not None:
            offload.append((s, touched))
            searches.append((s.name, str(view), using, limit, settle, where, touched, rows.tobytes(), rows.shape[1]))
    pending = readers.submit(searches) if readers is not None and searches else None
    sent = {s.name for s, _ in offload} if pending is not None else set()
    mine_here = [s for s in shards if s.name not in sent and not s.empty]
    answers = {s.name: _query(s, rows, limit, base, using, params) for s in mine_here}
    records: dict[str, Candidate] = {}
    remote = pending.wait() if pending is not None else None
    for (s, touched), answer in zip(offload, remote or [None] * len(offload), strict=True):
        if s.name in answers:
            continue
        if answer is None:  # the reader failed: search here
            answers[s.name] = _query(s, rows, limit, base, using, params)
            continue
        theirs, sent_records, settled = answer
        if settled:
            theirs = [[p for p in a if p[0] in sent_records] for a in theirs]
        mine = _query(s, rows, limit, with_ids(base, touched), using, params) if touched else [[] for _ in theirs]
        gone = set(touched)
        answers[s.name] = [[p for p in a if p[0] not in gone] + m for a, m in zip(theirs, mine, strict=True)]
        records |= {pid: decode(record, rows.shape[1]) for pid, record in sent_records.items() if pid not in gone}
    return answers, records


def _query(
    s: Shard, rows: np.ndarray, limit: int, query_filter: Filter | None, using: str, params: SearchParams | None
) -> Answers:
    answers = s.edge.query_batch(QueryBatchRequest(queries=[listing_query(rows, using, limit, query_filter, params)]))
    return [[(str(p.id), p.score) for p in answer] for answer in answers]


def similar_listings(
    shards: list[Shard],
    item_id: str,
    v: StoredVersion,
    k: int,
    filters: SimilarFilters,
    how: Searching = Searching(),
) -> list[Hit] | None:
    """GET /similar on a snapshot: the listing's usable photos query the index, the candidates are re-scored
    exactly (app/store/photos.py). None for an unknown item; ModelNotReady when it lacks `v`'s vector."""
    if k < 1:
        raise ValueError("k must be >= 1")
    pid = point_id(item_id)
    held = (s.edge.retrieve([pid], True, True) for s in shards if not s.empty)
    item = next((records[0] for records in held if records), None)
    if item is None:
        return None
    rows = photo_rows(record_vectors(item.vector).get(v.vector))
    if rows is None:
        raise ModelNotReady(f"item {item_id!r} has no vector of model version {v.model_version!r} yet")
    payload = item.payload or {}
    usable = photos.usable(rows, payload)
    limit = photos.candidates_for(k)
    where = ({"seller_id": payload.get("seller_id")}, filters)
    settle = photos.Settle(k, both_ways=True) if len(usable) == 1 else None
    found = candidates(shards, [rows[i] for i in usable], limit, where, v.vector, pid, how, settle)
    return photos.rank(rows, usable, found, k, both_ways=True)


def similar_to_photo(
    shards: list[Shard], vector: np.ndarray, v: StoredVersion, k: int, filters: SimilarFilters, how: Searching
) -> list[Hit]:
    """POST /similar on a snapshot: listings by their best photo's cosine to `vector` (matched.query_photo 0)."""
    query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
    where = ({"seller_id": filters.seller_id}, filters)
    settle = photos.Settle(k, both_ways=False)
    found = candidates(shards, [query[0]], photos.candidates_for(k), where, v.vector, None, how, settle)
    return photos.rank(query, [0], found, k, both_ways=False)


def page(shards: list[Shard], limit: int, cursor: str | None, category: str | None, status: str | None) -> ItemPage:
    """Scroll every shard from `cursor` (each ordered by point id, offset included) and merge by point id.

    Each shard gives its first limit + 1 matches; the limit + 1 smallest ids of the union are among
    them, so the merge is exact: `limit` items and the id the next page starts at.
    """
    must: list[Any] = [
        FieldCondition(key, match=MatchValue(value))
        for key, value in (("category", category), ("status", status))
        if value is not None
    ]
    return _merged_page(shards, Filter(must=must) if must else None, limit, cursor)


def lacking(shards: list[Shard], vector: str, limit: int, cursor: str | None) -> ItemPage:
    """Like `page`, for the items lacking the named vector `vector` (a model version's backfill)."""
    return _merged_page(shards, Filter(must_not=[HasVectorCondition(vector)]), limit, cursor)


def _merged_page(shards: list[Shard], where: Filter | None, limit: int, cursor: str | None) -> ItemPage:
    request = ScrollRequest(offset=cursor, limit=limit + 1, filter=where, with_payload=True, with_vector=False)
    merged: dict[str, dict[str, Any]] = {}
    for s in shards:
        records, _ = s.edge.scroll(request)
        for r in records:
            merged.setdefault(str(r.id), dict(r.payload or {}))
    ids = sorted(merged)[: limit + 1]
    next_point = ids[limit] if len(ids) > limit else None
    return ItemPage([merged[i] for i in ids[:limit]], next_point)
