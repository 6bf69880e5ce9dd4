"""`ShardedIndex`: the `HammingIndex` API over N shards, each a HammingIndex held by Ray actors that
memory-map the shard's directory, so an index can outgrow one process or one machine.

Routing: the item with id i lives in shard `i % N` (ROUTING), so an add with ids and a remove each
reach exactly the shards that own those ids; default ids continue after the largest id of all shards.
Placement: shard s is held by actor s % A (A actors, default one per cluster node and at most one per
shard, each searching on its node's cores), so a query costs one Ray call per node, not per shard or
per core: a Ray actor call costs ~0.6 ms of round trip, and more processes on a node only add context
switches (measured on 2 cores: one query over 10^6 codes in 1.3 ms with one actor, 3.2 ms with two).
Queries go to every actor at once, in batches of `query_batch`; each shard returns its exact top-k
(or range hits) ordered by (distance, id), the actor merges its shards' answers and the driver the
actors', both with `hashsearch.results`' exact merge, so the answer is the one a single
HammingIndex over the same codes gives.

Faults: every shard actor is started with Ray's `max_restarts`; a restarted actor reloads its
directory and the driver replays the changes made since the last save or load (kept in a journal
per shard, in the driver's memory until `save` empties it), then retries the query. A shard that stays unavailable fails the call with
`ShardUnavailableError` naming it: never a silent partial answer. With `replicas` > 1, queries
rotate over the copies of a shard (throughput) and fail over to another copy.

Layout of a sharded index directory:
    manifest.json    format "hashsearch-sharded-index", version, lineage uid, nbits, count, shards,
                     routing, backend, params, per-shard counts, and a copy of each shard's manifest
    shard-00000/     one HammingIndex directory per shard (`hashsearch.storage`'s format), ...
A first save writes a temporary sibling and renames it. Saving again over the same index (same
lineage uid) is incremental: each changed shard saves its new segments in its own directory, and
the top manifest, replaced atomically, is the single commit point: a load that finds a shard's own
manifest ahead of the copy in the top manifest (a save interrupted between the two) restores the
copy, whose files the shard's save kept.
On a cluster the directory must be on storage every node sees (NFS or similar), since each shard
actor opens its own shard directory wherever Ray places it.
"""
from __future__ import annotations

import datetime as _dt
import itertools
import os
import pickle
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from hashsearch import lookup
from hashsearch.cluster import cluster_cpus, cluster_nodes, connect
from hashsearch.codes import check_nbits, validate_codes
from hashsearch.errors import CorruptIndexError, HashsearchError, InvalidInputError, UnknownIdError
from hashsearch.index import HammingIndex, set_num_threads
from hashsearch.results import empty_topk, merge_range, merge_topk
from hashsearch.storage import (MANIFEST, check_ids, check_metadata, index_size, leftovers, load_manifest, read_index,
                                read_manifest, replace_manifest, restore_manifest, staging, unique_ids, write_index,
                                write_manifest)

SHARDED_FORMAT = "hashsearch-sharded-index"
SHARDED_VERSION = 1
ROUTING = "id % shards"
STALE = "stale-shard"  # what a shard answers to a call meant for an earlier incarnation of it


class ShardUnavailableError(HashsearchError):
    """A shard did not answer (dead, or still restarting after every retry)."""


def shard_of(ids: np.ndarray, nshards: int) -> np.ndarray:
    """The shard of each id: id % nshards (ROUTING)."""
    return np.asarray(ids, dtype=np.int64) % nshards


def pack(obj: Any) -> bytes:
    """What crosses between the driver and a shard actor: one pickled bytes object each way, since Ray
    moves one bytes object much faster than numpy arguments and results (each array costs Ray an
    out-of-band buffer: 2.3 -> 1.4 ms per single-query round trip to 2 actors here)."""
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def unpack(blob: bytes) -> Any:
    return pickle.loads(blob)


def shard_dir(path: str | os.PathLike, shard: int) -> Path:
    return Path(path) / f"shard-{shard:05d}"


def is_sharded(path: str | os.PathLike) -> bool:
    """Whether `path` holds a sharded index (its manifest says so)."""
    try:
        load_manifest(path, SHARDED_FORMAT)
    except (CorruptIndexError, OSError):
        return False
    return True


# ------------------------------------------------------------------------------- one shard (actor body)

class Shard:
    """One shard inside a shard actor: a HammingIndex memory-mapped from its directory (or empty)."""

    def __init__(self, nbits: int, backend: str, params: dict, path: str | None, shard: int, nshards: int):
        self.spec = (nbits, backend, params)
        self.shard, self.nshards = shard, nshards
        self.path: str | None = None
        self.changed = False  # changes applied since the directory was loaded
        try:
            self._open(path)
        except Exception:  # noqa: BLE001 - resync reopens it and sends the error to the driver
            self._open(None)

    def _open(self, path: str | None) -> None:
        nbits, backend, params = self.spec
        if path is None:
            self.index = HammingIndex(nbits, backend=backend, **params)
        else:
            self.index = HammingIndex.load(path, mmap=True)
            if self.nshards > 1 and len(self.index) and np.any(shard_of(self.index.ids, self.nshards) != self.shard):
                raise CorruptIndexError(f"{path}: holds ids that route to another shard ({ROUTING})")
        self.path, self.changed = path, False

    def resync(self, path: str | None, ops: list) -> dict:
        """Reopen `path` (unless already open and unchanged) and replay `ops`; returns the stats."""
        if self.changed or self.path != path or (path is None and len(self.index)):
            self._open(path)
        for name, args in ops:
            getattr(self.index, name)(*args)
        self.changed = bool(ops)
        return self.stats()

    def stats(self) -> dict:
        meta = self.index.metadata
        return {"count": len(self.index), "last_id": int(self.index.ids[-1]) if len(self.index) else -1,
                "schema": None if meta is None else meta.schema, "pid": os.getpid(),
                "nbytes": int(self.index.nbytes)}

    def search(self, q: np.ndarray, k: int, filter: Any = None) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(q, k, filter=filter)

    def range_search(self, q: np.ndarray, radius: int, filter: Any = None):
        return self.index.range_search(q, radius, filter=filter)

    def add(self, codes, ids, metadata) -> None:
        self.changed = True
        self.index.add(codes, ids, metadata)

    def remove(self, ids) -> int:
        self.changed = True
        return self.index.remove(ids)

    def missing(self, ids) -> np.ndarray:
        return lookup.missing(self.index, ids)

    def metadata_rows(self, ids) -> pa.Table | None:
        return lookup.metadata_rows(self.index, ids)

    def contents(self) -> tuple[np.ndarray, pa.Table | None]:
        return np.asarray(self.index.ids), self.index.metadata

    def save(self, path: str) -> dict:
        """Write the shard (nothing when saved there and unchanged since); returns its manifest."""
        if self.changed or self.path != path or not Path(path, MANIFEST).is_file():
            self.index.save(path)
        self.path, self.changed = path, False
        return read_manifest(path)


class ShardHost:
    """The body of one shard actor: the shards it holds (each a `Shard`), searched one after the other
    on the actor's threads with their results merged here, so a query costs one actor call per
    process, not per shard; and a token new in every incarnation, so the driver sees a restart and
    replays its journals."""

    def __init__(self, nbits: int, backend: str, params: dict, paths: dict[int, str | None], nshards: int,
                 threads: int):
        set_num_threads(threads)
        self.token = uuid.uuid4().hex
        self.shards = {s: Shard(nbits, backend, params, path, s, nshards) for s, path in paths.items()}

    def resync(self, paths: dict[int, str | None], journals: dict[int, list]) -> tuple[str, dict[int, dict]]:
        """Resync every shard held here (Shard.resync); returns (token, {shard: stats})."""
        return self.token, {s: shard.resync(paths[s], journals[s]) for s, shard in self.shards.items()}

    def request(self, token: str, blob: bytes) -> bytes:
        """Run the call `blob` packs ((method, args), see `pack`) for the driver that last synced with
        this incarnation, and answer packed (STALE for an earlier incarnation's driver)."""
        if token != self.token:
            return pack(STALE)
        name, args = unpack(blob)
        return pack(getattr(self, name)(*args))

    def call(self, calls: dict[int, tuple[str, tuple, dict]]) -> dict[int, Any]:
        """Run calls[s] = (method, args, kwargs) on shard s."""
        return {s: getattr(self.shards[s], name)(*args, **kwargs) for s, (name, args, kwargs) in calls.items()}

    def search(self, q: np.ndarray, k: int, filter: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """The exact top-k over every shard held here."""
        parts = [p for p in (shard.search(q, k, filter) for shard in self.shards.values()) if p[0].shape[1]]
        return merge_topk(parts, min(k, sum(p[0].shape[1] for p in parts))) if parts else empty_topk(len(q), 0)

    def range_search(self, q: np.ndarray, radius: int, filter: Any = None):
        """Every hit within `radius` over every shard held here."""
        return merge_range([shard.range_search(q, radius, filter) for shard in self.shards.values()])

    def stats(self) -> dict:
        """This process and its shards' stats (for monitoring and fault drills)."""
        return {"pid": os.getpid(), "shards": {s: shard.stats() for s, shard in self.shards.items()}}


# ------------------------------------------------------------------------------- the driver

class ShardedIndex:
    """Exact k-NN and radius search over `nbits`-bit codes spread over `shards` Ray actors (see the
    module docstring); results equal a single HammingIndex's over the same codes."""

    def __init__(self, nbits: int, shards: int = 2, backend: str = "numba", *, replicas: int = 1,
                 address: str | None = None, max_restarts: int = 3, retries: int = 3,
                 timeout_s: float | None = 600.0, restart_timeout_s: float = 120.0, query_batch: int = 4096,
                 cpus_per_shard: float | None = None, actors: int | None = None, **params: Any):
        """An empty index on the Ray cluster at `address` ($RAY_ADDRESS; default: a local instance).
        `replicas` copies per shard; an actor is restarted up to `max_restarts` times and a call is
        retried `retries` times before ShardUnavailableError; `timeout_s` bounds one shard call.
        `actors` processes hold the shards (shard s in actor s % actors; default: one per cluster node, at
        most one per shard), each replica set alike: a query costs one Ray call per actor, not per shard.
        `cpus_per_shard` CPUs are reserved for each actor (default none, so that several indexes and
        Ray Data jobs share a cluster) and set its threads (default: the cluster's CPUs / actors)."""
        self.nbits = check_nbits(nbits)
        probe = HammingIndex(nbits, backend=backend, **params)  # checks backend and params
        for name, value, low in (("shards", shards, 1), ("replicas", replicas, 1), ("query_batch", query_batch, 1),
                                 ("max_restarts", max_restarts, 0), ("retries", retries, 0),
                                 ("actors", 1 if actors is None else actors, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise InvalidInputError(f"{name} must be an integer >= {low}, got {value!r}")
        self.backend, self.params = probe.backend, probe.params
        self.nshards, self.replicas, self.query_batch = int(shards), int(replicas), int(query_batch)
        self.max_restarts, self.retries = int(max_restarts), int(retries)
        self.timeout_s, self.restart_timeout_s = timeout_s, restart_timeout_s
        self.address, self.cpus_per_shard, self.nactors = address, cpus_per_shard, actors
        self.uid = uuid.uuid4().hex  # lineage: saving over a directory of the same lineage is incremental
        self._start([None] * self.nshards)

    # ------------------------------------------------------------------ actors
    def _start(self, paths: list[str | None]) -> None:
        ray = connect(self.address)
        self._ray = ray
        self._base = list(paths)  # what a restarted shard reopens
        self._journal: list[list[tuple[str, tuple]]] = [[] for _ in paths]  # changes since _base
        cpus = cluster_cpus()
        self.nactors = min(self.nshards, int(self.nactors or cluster_nodes()))
        self._held = [list(range(h, self.nshards, self.nactors)) for h in range(self.nactors)]
        share = self.cpus_per_shard or cpus / (self.nactors * self.replicas)
        actor_class = ray.remote(ShardHost).options(num_cpus=self.cpus_per_shard or 0, max_restarts=self.max_restarts,
                                                    max_task_retries=0, scheduling_strategy="SPREAD")
        self._actors = [[actor_class.remote(self.nbits, self.backend, self.params, {s: paths[s] for s in held},
                                            self.nshards, max(1, int(share))) for _ in range(self.replicas)]
                        for held in self._held]
        self._tokens: list[list[str | None]] = [[None] * self.replicas for _ in self._held]
        self._turn = [itertools.cycle(range(self.replicas)) for _ in self._held]
        stats = {}
        try:
            for h in range(self.nactors):
                for r in range(self.replicas):
                    stats.update(self._recover(h, r, first=True))
        except BaseException:
            self.close()
            raise
        self._absorb(stats)

    def _absorb(self, stats: dict[int, dict]) -> None:
        """Counts, the next default id and the metadata schema from shard stats."""
        self._counts = [stats[s]["count"] for s in range(self.nshards)]
        self._next_id = max(st["last_id"] for st in stats.values()) + 1
        schemas = [st["schema"] for st in stats.values() if st["count"] and st["schema"] is not None]
        self._schema = schemas[0] if schemas else None

    def _recover(self, h: int, r: int, first: bool = False) -> dict[int, dict]:
        """Wait for replica r of actor h to be up, reopen its shards' bases and replay their journals;
        returns {shard: stats}, or raises ShardUnavailableError."""
        ray = self._ray
        from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError, RayTaskError

        held = self._held[h]
        deadline = time.monotonic() + self.restart_timeout_s
        while True:
            try:
                ref = self._actors[h][r].resync.remote({s: self._base[s] for s in held},
                                                       {s: self._journal[s] for s in held})
                token, stats = ray.get(ref, timeout=max(1.0, deadline - time.monotonic()))
                self._tokens[h][r] = token
                return stats
            except RayTaskError as exc:  # the shard's own error, e.g. a corrupt directory
                cause = exc.cause if isinstance(exc.cause, HashsearchError) else exc
                raise ShardUnavailableError(f"{self._name(h, r)} could not open its directory: {cause}") from None
            except (RayActorError, GetTimeoutError) as exc:
                if isinstance(exc, ActorDiedError) or time.monotonic() > deadline:
                    raise ShardUnavailableError(f"{self._name(h, r)} is unavailable: {_first_line(exc)}") from None
                time.sleep(0.05 if first else 0.2)

    def _name(self, h: int, r: int) -> str:
        held = self._held[h]
        name = (f"shard {held[0]}" if len(held) == 1 else f"shards {', '.join(map(str, held))}") + f" of {self.nshards}"
        return name + (f" (replica {r})" if self.replicas > 1 else "")

    def _submit(self, h: int, r: int, blob: Any) -> Any:
        return self._actors[h][r].request.remote(self._tokens[h][r], blob)

    def _fanout(self, calls: dict[int, tuple[str, tuple]], everywhere: bool = False) -> dict[int, Any]:
        """Run calls[h] = (ShardHost method, args) on actor h, packed, on all actors at once: on one
        replica (reads: retried after a restart, on the next replica), or on every replica (writes
        already in the journal: a replica that restarts gets them by replay). Returns {actor: result}."""
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        packed: dict[int, Any] = {}  # one blob per distinct call, in the object store when large
        for call in calls.values():
            if id(call) not in packed:
                blob = pack(call)
                packed[id(call)] = self._ray.put(blob) if len(blob) > 1 << 16 else blob
        blobs = {h: packed[id(call)] for h, call in calls.items()}
        pending = [(h, r, self._submit(h, r, blobs[h])) for h in calls
                   for r in (range(self.replicas) if everywhere else [next(self._turn[h])])]
        out: dict[int, Any] = {}
        try:  # the common case in one round trip; any trouble is sorted out actor by actor below
            values = [unpack(v) for v in self._ray.get([ref for _, _, ref in pending], timeout=self.timeout_s)]
            if not any(isinstance(v, str) and v == STALE for v in values):
                for (h, _, _), value in zip(pending, values):
                    out.setdefault(h, value)
                return out
        except (RayActorError, GetTimeoutError, RayTaskError):
            pass
        for h, r, ref in pending:
            failures: list[str] = []
            while True:
                try:
                    value = unpack(self._ray.get(ref, timeout=self.timeout_s))
                    if not (isinstance(value, str) and value == STALE):
                        out.setdefault(h, value)
                        break
                    failures.append("restarted")
                except RayTaskError as exc:
                    raise (exc.cause if exc.cause is not None else exc) from None
                except (RayActorError, GetTimeoutError) as exc:
                    failures.append(_first_line(exc))
                if len(failures) > self.retries:
                    raise ShardUnavailableError(
                        f"{self._name(h, r)} is unavailable after {len(failures)} tries: {failures[-1]}")
                if not everywhere and self.replicas > 1:
                    r = next(self._turn[h])
                try:
                    self._recover(h, r)
                except ShardUnavailableError:
                    if everywhere or self.replicas == 1 or len(failures) > self.retries:
                        raise
                    continue
                if everywhere:  # the replay applied this write
                    break
                ref = self._submit(h, r, blobs[h])
        return out

    def _per_shard(self, calls: dict[int, tuple[str, tuple, dict]], everywhere: bool = False) -> dict[int, Any]:
        """Run calls[s] = (Shard method, args, kwargs) on shard s, one actor call per actor involved;
        returns {shard: result}."""
        grouped: dict[int, dict] = {}
        for s, call in calls.items():
            grouped.setdefault(s % self.nactors, {})[s] = call
        out: dict[int, Any] = {}
        for part in self._fanout({h: ("call", (group,)) for h, group in grouped.items()}, everywhere).values():
            out.update(part)
        return out

    def _write(self, ops: dict[int, tuple[str, tuple]]) -> dict[int, Any]:
        """Apply per-shard changes to every replica, journaled first so that a restart replays them."""
        for s, op in ops.items():
            self._journal[s].append(op)
        return self._per_shard({s: (name, args, {}) for s, (name, args) in ops.items()}, everywhere=True)

    def actor(self, shard: int, replica: int = 0) -> Any:
        """The Ray actor handle holding one shard's replica (for monitoring, or fault drills with ray.kill)."""
        return self._actors[shard % self.nactors][replica]

    def close(self) -> None:
        """Stop the shard actors (what was not saved is gone)."""
        for replicas in getattr(self, "_actors", []):
            for a in replicas:
                self._ray.kill(a, no_restart=True)
        self._actors = []

    def __enter__(self) -> "ShardedIndex":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ accessors
    @property
    def ntotal(self) -> int:
        return int(sum(self._counts))

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        return (f"ShardedIndex(nbits={self.nbits}, shards={self.nshards}, replicas={self.replicas}, "
                f"backend={self.backend!r}, ntotal={self.ntotal})")

    @property
    def next_id(self) -> int:
        """The first id a default add gets: one after the largest id of all shards."""
        return self._next_id

    @property
    def metadata_schema(self) -> pa.Schema | None:
        """The columns of the items' metadata, or None when the index keeps none."""
        return self._schema

    @property
    def counts(self) -> list[int]:
        """Items per shard."""
        return list(self._counts)

    def _contents(self) -> tuple[np.ndarray, pa.Table | None]:
        parts = self._per_shard({s: ("contents", (), {}) for s in range(self.nshards)})
        ids = np.concatenate([parts[s][0] for s in range(self.nshards)]).astype(np.int64)
        order = np.argsort(ids, kind="stable")
        tables = [parts[s][1] for s in range(self.nshards) if parts[s][1] is not None and len(parts[s][1])]
        meta = pa.concat_tables(tables).take(pa.array(order)) if self._schema is not None and tables else None
        return ids[order], meta

    @property
    def ids(self) -> np.ndarray:
        """(ntotal,) int64 ids of every shard, ascending (gathered from the shards: O(ntotal))."""
        return self._contents()[0]

    @property
    def metadata(self) -> pa.Table | None:
        """Per-item columns in ascending id order (gathered from the shards), or None."""
        return self._contents()[1]

    def metadata_rows(self, ids: np.ndarray) -> pa.Table | None:
        """The metadata rows of `ids` in the order given, or None when the index keeps no metadata."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if self._schema is None:
            return None
        if ids.size == 0:
            return self._schema.empty_table()
        owner = shard_of(ids, self.nshards)
        shards = [int(s) for s in np.unique(owner)]
        parts = self._per_shard({s: ("metadata_rows", (ids[owner == s],), {}) for s in shards})
        where = np.concatenate([np.nonzero(owner == s)[0] for s in shards])
        return pa.concat_tables([parts[s] for s in shards]).take(pa.array(np.argsort(where)))

    # ------------------------------------------------------------------ mutation
    def add(self, codes: np.ndarray, ids: np.ndarray | None = None, metadata: pa.Table | dict | None = None) -> None:
        """Add packed codes with their ids (default: continuing after the largest id) and optional
        metadata rows, each to the shard its id routes to. Raises InvalidInputError on bad codes,
        negative or duplicate ids, and changes nothing then."""
        codes = validate_codes(codes, self.nbits)
        n = codes.shape[0]
        metadata = check_metadata(metadata, n)
        if self.ntotal and (metadata is None) != (self._schema is None):
            raise InvalidInputError("metadata must be given with every add or with none "
                                    f"(the index {'has' if self._schema is not None else 'has no'} metadata)")
        if self.ntotal and metadata is not None and not metadata.schema.remove_metadata().equals(
                self._schema.remove_metadata()):
            raise InvalidInputError(f"metadata columns differ from the index's: {metadata.schema} vs {self._schema}")
        if ids is None:
            ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        else:
            ids = check_ids(ids, n)
            if n and ids.min() < 0:
                raise InvalidInputError(f"ids must be non-negative (-1 marks padding), got {ids.min()}")
            uniq, counts = np.unique(ids, return_counts=True)
            if n and counts.max() > 1:
                raise InvalidInputError(f"duplicate id {uniq[counts > 1][0]}: ids must be unique in the index")
            owner = shard_of(ids, self.nshards)
            absent = self._per_shard({int(s): ("missing", (ids[owner == s],), {}) for s in np.unique(owner)})
            held = np.setdiff1d(ids, np.concatenate(list(absent.values())) if absent else ids)
            if held.size:
                raise InvalidInputError(f"duplicate id {held[0]}: ids must be unique in the index")
        if n == 0:
            return
        owner = shard_of(ids, self.nshards)
        ops = {}
        for s in np.unique(owner):
            sel = np.nonzero(owner == s)[0]
            ops[int(s)] = ("add", (np.ascontiguousarray(codes[sel]), ids[sel],
                                   None if metadata is None else metadata.take(pa.array(sel))))
        self._write(ops)
        for s, (_, args) in ops.items():
            self._counts[s] += args[1].size
        self._next_id = max(self._next_id, int(ids.max()) + 1)
        if metadata is not None:
            self._schema = metadata.schema

    def remove(self, ids: Any) -> int:
        """Remove the items with these ids; returns how many. An id not in the index raises
        UnknownIdError and removes nothing."""
        ids = unique_ids(ids)
        if ids.size == 0:
            return 0
        owner = shard_of(ids, self.nshards)
        shards = [int(s) for s in np.unique(owner)]
        absent = np.concatenate(list(self._per_shard({s: ("missing", (ids[owner == s],), {}) for s in shards}).values()))
        if absent.size:
            raise UnknownIdError(f"id {np.sort(absent)[0]} is not in the index ({absent.size} unknown id(s) given)")
        self._write({s: ("remove", (ids[owner == s],)) for s in shards})
        for s in shards:
            self._counts[s] -= int(np.count_nonzero(owner == s))
        if self._next_id - 1 in ids:  # the largest id went: default ids continue after the new largest
            self._absorb(self._per_shard({s: ("stats", (), {}) for s in range(self.nshards)}))
        return int(ids.size)

    # ------------------------------------------------------------------ search
    def _batches(self, queries: np.ndarray) -> Iterator[np.ndarray]:
        """Query batches of at most `query_batch` rows."""
        if isinstance(queries, np.ndarray) and queries.ndim == 1:
            queries = queries.reshape(1, -1)
        if isinstance(queries, np.ndarray) and not queries.flags.c_contiguous:
            queries = np.ascontiguousarray(queries)
        q = validate_codes(queries, self.nbits, name="queries")
        for lo in range(0, max(q.shape[0], 1), self.query_batch):
            yield q[lo:lo + self.query_batch]

    def search(self, queries: np.ndarray, k: int, filter: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact k nearest codes of each query over all shards: (nq, min(k, len)) int32 distances and
        int64 ids, as HammingIndex.search returns them: rows sorted by (distance, id), padded with
        (PAD_DISTANCE, -1) only where a filter leaves fewer matches."""
        width = min(int(k), len(self)) if isinstance(k, (int, np.integer)) and not isinstance(k, bool) else k
        out = []
        for batch in self._batches(queries):
            parts = self._fanout(dict.fromkeys(range(self.nactors), ("search", (batch, k, filter))))
            parts = [parts[h] for h in range(self.nactors) if parts[h][0].shape[1]]
            out.append(merge_topk(parts, width) if parts else empty_topk(len(batch), 0))
        return np.concatenate([d for d, _ in out]), np.concatenate([i for _, i in out])

    def range_search(self, queries: np.ndarray, radius: int, filter: Any = None):
        """Every code within `radius` (inclusive) of each query over all shards: CSR (lims, distances,
        ids), rows sorted by (distance, id)."""
        lims, dist, ids = [np.zeros(1, np.int64)], [], []
        for batch in self._batches(queries):
            parts = self._fanout(dict.fromkeys(range(self.nactors), ("range_search", (batch, radius, filter))))
            l, d, i = merge_range([parts[h] for h in range(self.nactors)])
            lims.append(l[1:] + lims[-1][-1])
            dist.append(d)
            ids.append(i)
        return np.concatenate(lims), np.concatenate(dist).astype(np.int32), np.concatenate(ids).astype(np.int64)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write every shard and the top manifest to `path`: over a directory of this index's lineage,
        only the changed shards' new segments and then the top manifest (the commit point); anywhere
        else, a whole new directory swapped in atomically. The shards then map the saved files and the
        journal of unsaved changes is emptied."""
        path = Path(path).absolute()
        if self._saved_at(path):
            manifests = self._per_shard({s: ("save", (str(shard_dir(path, s)),), {}) for s in range(self.nshards)})
            replace_manifest(path, self._manifest(manifests))
        else:
            with staging(path) as tmp:
                manifests = self._per_shard({s: ("save", (str(shard_dir(tmp, s)),), {}) for s in range(self.nshards)})
                write_manifest(tmp, self._manifest(manifests))
        self._base = [str(shard_dir(path, s)) for s in range(self.nshards)]
        self._journal = [[] for _ in range(self.nshards)]
        for h in range(self.nactors):  # every replica maps the published files
            for r in range(self.replicas):
                self._recover(h, r)

    def _saved_at(self, path: Path) -> bool:
        """Whether `path` holds a saved version of this very index (same lineage and shards)."""
        try:
            manifest = read_sharded_manifest(path)
        except (CorruptIndexError, OSError):
            return False
        return manifest.get("uid") == self.uid and manifest["shards"] == self.nshards and manifest["nbits"] == self.nbits

    def _manifest(self, shard_manifests: dict[int, dict]) -> dict[str, Any]:
        return sharded_manifest(self.nbits, self.backend, self.params, self._counts, self.uid,
                                [shard_manifests[s] for s in range(self.nshards)])

    @classmethod
    def load(cls, path: str | os.PathLike, *, replicas: int = 1, address: str | None = None,
             **options: Any) -> "ShardedIndex":
        """Open a sharded index directory: one actor per shard replica memory-maps its shard.
        `options` are the constructor's (max_restarts, retries, timeout_s, restart_timeout_s,
        query_batch, cpus_per_shard, actors)."""
        path = Path(path).absolute()
        manifest = read_sharded_manifest(path)
        self = cls.__new__(cls)
        self.nbits, self.backend, self.params = manifest["nbits"], manifest["backend"], manifest["params"]
        self.nshards, self.replicas, self.address = manifest["shards"], int(replicas), address
        self.query_batch = int(options.pop("query_batch", 4096))
        self.max_restarts, self.retries = int(options.pop("max_restarts", 3)), int(options.pop("retries", 3))
        self.timeout_s = options.pop("timeout_s", 600.0)
        self.restart_timeout_s = options.pop("restart_timeout_s", 120.0)
        self.cpus_per_shard, self.nactors = options.pop("cpus_per_shard", None), options.pop("actors", None)
        if options:
            raise InvalidInputError(f"unknown option(s) {', '.join(options)} for ShardedIndex.load")
        self.uid = manifest.get("uid") or uuid.uuid4().hex
        restore_uncommitted(path, manifest)
        self._start([str(shard_dir(path, s)) for s in range(self.nshards)])
        if self._counts != manifest["counts"]:
            self.close()
            raise CorruptIndexError(f"{path}: shard counts {self._counts} differ from the manifest's {manifest['counts']}")
        return self


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# ------------------------------------------------------------------------------- directories

def sharded_manifest(nbits: int, backend: str, params: dict, counts: list[int], uid: str,
                     shard_manifests: list[dict]) -> dict[str, Any]:
    """The top manifest of a sharded index: its shape, lineage, per-shard counts and a copy of each
    shard's own manifest (what the top manifest commits)."""
    return {
        "format": SHARDED_FORMAT, "format_version": SHARDED_VERSION, "uid": uid, "nbits": nbits,
        "count": int(sum(counts)), "shards": len(counts), "routing": ROUTING, "backend": backend, "params": params,
        "counts": [int(c) for c in counts], "shard_manifests": shard_manifests,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def restore_uncommitted(path: Path, manifest: dict[str, Any]) -> list[int]:
    """Shards whose own manifest differs from the copy the top manifest committed (a save interrupted
    before its top manifest) get that copy back; returns their numbers."""
    restored = []
    for s, committed in enumerate(manifest.get("shard_manifests") or []):
        where = shard_dir(path, s)
        try:
            current = read_manifest(where)
        except (CorruptIndexError, OSError):
            current = None
        if current is None or _generation(current) != _generation(committed):
            restore_manifest(where, committed)
            restored.append(s)
    return restored


def _generation(manifest: dict[str, Any]) -> tuple:
    return manifest.get("uid"), manifest.get("generation")


def read_sharded_manifest(path: Path) -> dict[str, Any]:
    """The checked top manifest of a sharded index directory."""
    manifest = load_manifest(path, SHARDED_FORMAT)
    where = path / MANIFEST
    if manifest.get("format_version") != SHARDED_VERSION or manifest.get("routing") != ROUTING:
        raise CorruptIndexError(f"{where}: unknown format version or routing "
                                f"({manifest.get('format_version')!r}, {manifest.get('routing')!r})")
    counts, shards = manifest.get("counts"), manifest.get("shards")
    if not isinstance(shards, int) or shards < 1 or not isinstance(counts, list) or len(counts) != shards:
        raise CorruptIndexError(f"{where}: 'shards' and 'counts' disagree or are missing")
    return manifest


def write_sharded(path: str | os.PathLike, codes: np.ndarray, ids: np.ndarray | None, nshards: int, *,
                  backend: str = "numba", params: dict | None = None, metadata: pa.Table | None = None) -> list[int]:
    """Write codes (ids default to 0..n-1) straight to a sharded index directory without starting
    actors, atomically; returns the per-shard counts."""
    nbits = validate_codes(codes).shape[1] * 8
    params = HammingIndex(nbits, backend=backend, **(params or {})).params
    n = codes.shape[0]
    ids = np.arange(n, dtype=np.int64) if ids is None else check_ids(ids, n)
    owner = shard_of(ids, nshards)
    counts, manifests = [], []
    with staging(Path(path).absolute()) as tmp:
        for s in range(nshards):
            sel = np.nonzero(owner == s)[0]
            order = sel[np.argsort(ids[sel], kind="stable")]
            if order.size > 1 and np.any(ids[order][1:] == ids[order][:-1]):
                raise InvalidInputError("duplicate ids: ids must be unique in the index")
            write_index(shard_dir(tmp, s), np.ascontiguousarray(codes[order]), ids[order], nbits, backend=backend,
                        params=params, metadata=None if metadata is None else metadata.take(pa.array(order)))
            counts.append(int(order.size))
            manifests.append(read_manifest(shard_dir(tmp, s)))
        write_manifest(tmp, sharded_manifest(nbits, backend, params, counts, uuid.uuid4().hex, manifests))
    return counts


def describe_sharded(path: str | os.PathLike, verify: bool = True) -> dict[str, Any]:
    """What `hashsearch info` prints for a sharded index directory: its shape, each shard's rows,
    segments, tombstones and bytes, and what interrupted saves left (files, staging directories,
    shards whose own manifest is ahead of the committed one: the next load restores those)."""
    path = Path(path)
    manifest = read_sharded_manifest(path)
    committed = manifest.get("shard_manifests") or [None] * manifest["shards"]
    rows, segments, tombstones, disk, stray, ahead = [], [], [], [], [], []
    for s in range(manifest["shards"]):
        where = shard_dir(path, s)
        current = read_manifest(where)
        if committed[s] is not None and _generation(current) != _generation(committed[s]):
            ahead.append(s)
            rows.append(committed[s]["count"])
            segments.append(len(committed[s]["segments"]))
            tombstones.append(None)
        else:
            stored = read_index(where, mmap=True, verify=verify)
            if stored.count != manifest["counts"][s]:
                raise CorruptIndexError(f"{where}: {stored.count} rows but {path / MANIFEST} says {manifest['counts'][s]}")
            rows.append(stored.count)
            segments.append(len(stored.segments))
            tombstones.append(sum(0 if seg.dead is None else int(seg.dead.size) for seg in stored.segments))
        disk.append(index_size(where))
        stray += [f"{where.name}/{name}" for name in leftovers(where, current)]
    stray += sorted(p.name for p in path.iterdir() if p.name.startswith(f"{MANIFEST}.hs-tmp-"))
    stray += sorted(str(p) for p in path.parent.glob(f".{path.name}.*-*") if p.is_dir())
    total = int(sum(disk))
    return {
        "path": str(path), "sharded": True, "format": manifest["format"],
        "manifest_version": manifest["format_version"], "nbits": manifest["nbits"], "count": manifest["count"],
        "backend": manifest["backend"], "params": manifest["params"], "shards": manifest["shards"],
        "routing": manifest["routing"], "rows_per_shard": rows, "segments_per_shard": segments,
        "tombstones_per_shard": tombstones, "bytes_per_shard": disk, "bytes_on_disk": total,
        "bytes_per_item": total / manifest["count"] if manifest["count"] else None,
        "created": manifest.get("created"), "checksums": "ok" if verify else "not checked",
        "shards_ahead_of_manifest": ahead, "leftover_files": stray,
    }
