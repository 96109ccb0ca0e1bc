"""Embedded store: Qdrant Edge shards arranged as a small log-structured merge tree (LSM).

Why a tree of shards and not one shard
--------------------------------------
Qdrant Edge builds HNSW only inside `EdgeShard.optimize()`, and that call (like `create()`,
`load()`, `flush()` and `close()`) holds the Python GIL for its whole run: optimizing a shard of
20k x 768 points froze every thread of the process for seconds (BENCHMARKS.md, "Index maintenance").
One process may open a shard path. So the serving process never optimizes: indexes are built by a
subprocess on copies, and the server only swaps finished shards in.

Layout (root = QDRANT_PATH/<collection>/)
-----------------------------------------
- `manifest.json`: the model versions (model_version, state serving/candidate/retired, dim, the
  named vector holding it), a generation counter and the shard list (name, role, rank, points).
  Replaced atomically (tmp file, fsync, os.replace, fsync dir). Anything in root that the manifest
  does not name is garbage from a crash and is removed on open (but `meta.json`: get_meta/put_meta).
  A format-1 manifest (before versions: one dim and model_version) reads as that one serving version
  on the unnamed vector "".
- `shard-NNNNNN/`: one EdgeShard each, with a role:
  - hot: plain index, appendable; receives every upsert.
  - frozen: a former hot shard that reached `hot_max`; still serves reads, deletes and patches
    until the index built from it replaces it.
  - sealed: HNSW-indexed, built out of process; never receives upserts (but deletes and patches).
  An item lives in exactly one shard: an upsert writes the hot shard and deletes the point from
  the other shards that hold it. `rank` orders shards by data age (hot is newest; a built shard
  inherits the newest rank of its sources), so if a crash between those two steps leaves a
  duplicate, reads and merges keep the newest copy.
- `tmp-*`: staging of a running job; never in the manifest.

Model versions (named vectors)
------------------------------
One point holds the payload and one named vector per active version (serving + candidates), written
by one upsert. Every shard has exactly the active vectors: new shards are created with them (the
spare is brought up to date when it becomes hot), adding a version runs `create_dense_vector` on
every shard under the exclusive write gate and then writes the manifest, retiring writes the manifest
and then runs `delete_vector_name` (which frees the space at once). Open reconciles every shard with
the manifest, which repairs a crash between the two steps. A job's op log records vector creations
and deletions too; its result is given the vectors named there before the replay and the manifest's
vectors after it, so a build running across a version change ends with the right set. The builder
copies only the active vectors and indexes each. `set_vector` (backfill) writes one vector of the
shard holding the item, under that shard's lock, only if the payload's write_id still matches. That
moves the point out of a sealed shard's indexed segments (searched brute force from then on), so a
sealed shard with a quarter of its points rewritten gets a reseal job (a build with it as the source).

Maintenance (two background threads that mostly wait on subprocesses; one job at a time: 2 cores)
--------------------------------------------------------------------------------------------------
- Freeze: when the hot shard holds >= `hot_max` points, an empty *spare* shard becomes the hot shard
  and the old one turns frozen. The spare is made ahead of time by the builder's `create` command in a
  subprocess (create() holds the GIL too) and loaded by the spare thread, so a freeze is just a
  manifest write. Until the first spare exists (shortly after open) the hot shard may overshoot.
- Build job (frozen -> sealed) and merge job (size-tiered: `merge_fanin` sealed shards of one size
  tier, tier t holding sizes in [hot_max * fanin^t, hot_max * fanin^(t+1)), never producing more
  than `max_shard_points`, default 16 * hot_max; builds go first):
  1. Holding the sources' shard locks (writers of *those* shards wait; new items keep flowing into
     the hot shard), `cp -a` their directories into `tmp-<target>/`. No flush(): it fsyncs under
     the GIL. With the shards locked nothing changes their files, so each copy is exactly what a
     kill -9 at that instant would leave, and the builder recovers it from the WAL like a restart.
     From just before this, every op applied to a source is also appended to the job's op log.
  2. `python -m app.store.qdrant_edge.builder build --hold` (subprocess, niced, dies with its parent,
     stderr copied to the log) loads the copies, upserts all points into a new shard, creates the
     payload indexes, optimize(), flush, close, then maps every page of the result and waits.
     The job thread only waits on it.
  3. The server loads the result while the builder still maps it: load() drops the files from the
     page cache (fadvise DONTNEED) and faults them back in under the GIL, and Linux cannot drop pages
     another process maps, so the load is CPU only (tens of ms of CPU per 10k points: BENCHMARKS.md,
     "Index maintenance"; logged when > 50 ms). Then, holding the write gate exclusively: replay the
     op log, fsync the target's WAL, write the manifest (target replaces sources), swap the in-memory
     list. The sources are closed once their last reader is gone (reference counts), one at a time,
     then deleted.
  A crash at any point leaves either the old manifest (sources intact; staging and unswapped
  targets removed on open; the frozen shard is rebuilt) or the new one (target holds everything).
- Bulk file work is always one call (os.sync, a `cp`/`rm` child): each Python-level syscall drops
  and re-takes the GIL, and re-taking costs up to the 5 ms switch interval while request threads
  run, so a per-file walk stalled one swap for many seconds under a closed-loop reader
  (BENCHMARKS.md, "Index maintenance").

Bulk load
---------
Through the live path a point is indexed once when its hot shard is sealed and again in every merge
of its size tier (about 4-5 times before shards reach `max_shard_points`). `EdgeStore.bulk_load(rows)`
(a catalogue's first load, a re-import) indexes each point once: rows (payload with item_id,
{model version: photo vectors}, checked like an upsert; a bad row raises ValueError naming it) are
streamed into `tmp-bulk-<n>/` (float32 rows appended to files, payloads in a JSONL: memory stays
bounded), and every `shard_points` rows (default `bulk_shard_points`, 1M) the builder's `bulk` command
makes one sealed shard of them (one optimize()). It is loaded and swapped in like a job's result,
with a rank above every shard but the hot one (re-ranked above it), then older copies of its items
are deleted from the other shards (upsert semantics; a sealed shard this empties is dropped). Reads,
writes and maintenance go on meanwhile; a live write of an item the load also holds, made before its
shard is swapped in, is replaced by the load's copy. A kill -9 leaves whole shards and `tmp-*`
garbage; re-running the same load is idempotent. `stats()["points_built"]` counts the points passed
into HNSW builds (jobs and bulk loads) since open.

Concurrency
-----------
- Readers (get/similar/count) take the store's one lock (`StoreState.cond`) only to copy the shard
  list and bump reference counts, then query outside any lock; a retired shard is closed after its
  readers leave.
- Reader processes (`edge_read_workers`, readers.py): Qdrant Edge holds the GIL while it searches, so
  the HNSW searches of sealed shards run in `python -m app.store.qdrant_edge.reader` children, on
  *views* (`readers/<shard>/<slot>/`: the segment files hardlinked, an empty WAL; one copy per child
  because a shard directory can be loaded by one process) made when the shard's files are exactly what
  its builder flushed (or, at open, right after a flush). A request thread sends its batch to an idle
  child and waits in a GIL-free recv while it searches the hot and frozen shards itself. Every point a
  sealed shard took a write for after its view was made (delete, patch, set_vector, a job's replay) is
  in the shard's `touched` set: children leave those out and the server searches them itself (a has-id
  filter), so reads see every write. A child that dies is replaced and its search answered in-process.
- Writers hold the write gate in shared mode plus the lock of each shard they touch (taken without
  waiting; if a job is copying that shard, the writer leaves the gate, waits, and re-plans).
  Freeze and swap take the gate exclusively (a few ms), so a write never sees the shard set change.

Durability (measured, qdrant-edge-py 0.9.0)
-------------------------------------------
- update() appends to the shard's write-ahead log, which is a memory-mapped file: strace shows no
  write()/msync/fsync during update(). A kill -9 right after update() returns loses nothing (the
  data is in the kernel page cache; tests/integration/test_store_edge.py kills writers to check it), but a power
  loss or kernel crash could.
- flush() and close() msync/fsync every segment while holding the GIL (tens to hundreds of ms on a
  shared, busy disk: BENCHMARKS.md, "Index maintenance"), so calling flush() after each write would
  freeze reads far beyond the budget.
- Decision: after each write the store fsyncs the touched shards' WAL segment files from Python
  (`os.fsync` releases the GIL and is short: BENCHMARKS.md, "Index maintenance"; descriptors
  kept open), which persists the mmap-dirtied WAL
  pages. A returned upsert/patch/delete survives kill -9 (tested) and should survive a host crash
  (fsynced WAL; not testable here). flush() is called only on close(), after os.sync() so it has
  little left to write. `sync_wal=False` drops the per-write fsync (process-crash durability only).

Modules
-------
EdgeStore is a facade over parts that share one state object and are composed, not inherited:
- `store.py`: EdgeStore, the constructor and the VectorStore API (lifecycle, upsert/get/patch/
  delete/similar/count, stats), built from the parts below.
- `state.py`: StoreConfig (the constructor's settings) and StoreState, the state every part shares
  (shard list, spare, running job, open/stopping flags, counters, under one lock; the write gate).
- `collection.py`: opening a collection (model check, crash leftovers, loading or creating shards).
- `manifest.py`: Manifest, the on-disk layout (atomic manifest writes, shard numbers, garbage collection).
- `shard_set.py`: ShardSet, reader snapshots with reference counts, swaps, retire-after-last-reader.
- `writes.py`: ShardWriter, the gated write protocol (gate, shard locks, WAL fsync, op recording).
- `write_gate.py`: WriteGate, shared for writes, exclusive for freeze, swap and close.
- `jobs.py`: JobRunner, one build/merge job (builder subprocess, source snapshots, swap) and the spare.
- `maintenance.py`: MaintenanceScheduler, freezes and the spare, job and page-release threads.
- `bulk.py`, `staging.py`: BulkLoader (EdgeStore.bulk_load), and the staging folder format it shares
  with the builder.
- `planning.py`: the job record and which job is next (build first, then size-tiered merges).
- `shard.py`, `files.py`, `filters.py`: one open shard, file helpers (fsync, cp/rm, WAL syncer,
  directory lock), Qdrant filters for GET /similar.
- `browse.py`, `queries.py`: reads across a snapshot of shards (look-alike candidates, pages by point id),
  and the one query a listing's photos make on a shard (here and in the readers).
- `builder.py` (`python -m app.store.qdrant_edge.builder`): the out-of-process builder.
- `readers.py`, `reader.py` (`python -m app.store.qdrant_edge.reader`): the reader processes (the pool and views
  in the server, and the child).
- `page_cache.py`: sealed shards' originals and payloads read through the page cache, not held in a
  process's memory (prefetch on a view's load, release of the pages a search mapped).
"""

from __future__ import annotations

from app.store.qdrant_edge.store import EdgeStore

__all__ = ["EdgeStore"]
