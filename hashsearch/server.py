"""`hashsearch serve`: an HTTP service over a single or a sharded index, with FastAPI and uvicorn.

Endpoints: POST /search (a batch of codes, hex or base64, k, optional filter), POST /range (radius),
POST /add, POST /remove, POST /save, GET /info, GET /healthz, and the OpenAPI page at /docs.
Results carry ids, distances and each item's stored metadata. Write endpoints need the API key (the
X-API-Key header) when one is set. Requests over the limits (codes per request, k, body bytes, range
hits) are answered 4xx with {"error": "..."} naming the limit.

Why not Ray Serve: a sharded index already fans out to its Ray actors, so the front end only parses
JSON and merges; one uvicorn process does that, and it serves a single in-process index with no Ray
cluster at all. Ray Serve would add a controller, proxies and replica actors on every node for this
thin layer, and could not serve a plain HammingIndex without Ray.

Concurrency: reads run in parallel (uvicorn's thread pool), writes take the index alone (a
readers-writer lock) until HammingIndex is itself safe for concurrent writes. Changes are saved with
the index's atomic save on POST /save and at shutdown, so a stop never leaves a half-saved index.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import pyarrow as pa
from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from hashsearch import lookup
from hashsearch.errors import HashsearchError, InvalidInputError, UnknownIdError
from hashsearch.index import HammingIndex
from hashsearch.filters import parse_where
from hashsearch.sharded import is_sharded

API_KEY_HEADER = "X-API-Key"


@dataclass(frozen=True)
class Limits:
    """What one request may ask for."""

    max_batch: int = 1024  # codes per request
    max_k: int = 10_000
    max_body_bytes: int = 16 << 20
    max_range_hits: int = 1_000_000  # range results in one response


class ServiceError(Exception):
    """A request refused with an HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class RWLock:
    """Many readers or one writer; a waiting writer holds back new readers (no writer starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._waiting = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writing and not self._waiting)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            self._cond.wait_for(lambda: not self._writing and not self._readers)
            self._waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


# --------------------------------------------------------------------------------- request bodies

class Codes(BaseModel):
    codes: list[str] = Field(description="Packed codes, one string each (nbits/8 bytes)")
    encoding: Literal["hex", "base64"] = "hex"


def as_filter(value: list[int] | str | None) -> Any:
    """A request's filter as the index takes it: an id allow-list, or a where string parsed safely."""
    return parse_where(value) if isinstance(value, str) else value


class SearchRequest(Codes):
    k: int = Field(10, ge=1, description="Results per query")
    filter: list[int] | str | None = Field(
        None, description="Only these ids (a list), or items whose metadata match a where string, e.g. \"label == 3\"")


class RangeRequest(Codes):
    radius: int = Field(ge=0, description="Hamming radius, inclusive")
    filter: list[int] | str | None = Field(None, description="As for /search")


class AddRequest(Codes):
    ids: list[int] | None = Field(None, description="One non-negative id per code (default: after the largest)")
    metadata: list[dict[str, Any]] | None = Field(None, description="One object of columns per code")


class RemoveRequest(BaseModel):
    ids: list[int]


# --------------------------------------------------------------------------------- the service

class Service:
    """An open index and what the endpoints share: its lock, limits, key and unsaved-changes flag."""

    def __init__(self, index_dir: str | Path, *, api_key: str | None = None, limits: Limits = Limits(),
                 replicas: int = 1, address: str | None = None):
        self.path = Path(index_dir)
        self.sharded = is_sharded(self.path)
        if self.sharded:
            from hashsearch.sharded import ShardedIndex

            self.index: Any = ShardedIndex.load(self.path, replicas=replicas, address=address)
        else:
            self.index = HammingIndex.load(self.path, mmap=True)
        self.api_key, self.limits = api_key, limits
        self.lock = RWLock()
        self.dirty = False

    def warm_up(self) -> None:
        """One top-k and one radius query before the port opens, so that numba compiles the search
        kernels now (seconds on a cold cache) rather than inside the first client's request."""
        probe = np.zeros((1, self.index.nbits // 8), np.uint8)
        self.index.search(probe, 1)
        self.index.range_search(probe, 0)

    def decode(self, body: Codes) -> np.ndarray:
        """(n, nbits/8) uint8 codes from hex or base64 strings, each checked for its length."""
        if len(body.codes) > self.limits.max_batch:
            raise ServiceError(413, f"{len(body.codes)} codes in one request; the limit is {self.limits.max_batch}")
        width = self.index.nbits // 8
        out = np.empty((len(body.codes), width), np.uint8)
        for i, text in enumerate(body.codes):
            try:
                raw = bytes.fromhex(text) if body.encoding == "hex" else base64.b64decode(text, validate=True)
            except (ValueError, binascii.Error):
                raise ServiceError(400, f"codes[{i}] is not valid {body.encoding}") from None
            if len(raw) != width:
                raise ServiceError(400, f"codes[{i}] has {len(raw)} bytes; this index holds "
                                        f"{self.index.nbits}-bit codes ({width} bytes)")
            out[i] = np.frombuffer(raw, np.uint8)
        return out

    def rows(self, ids: np.ndarray) -> list[dict[str, Any]] | None:
        """Metadata of each id as a dict (None when the index keeps no metadata)."""
        if self.sharded:
            table = self.index.metadata_rows(ids)
        else:
            table = lookup.metadata_rows(self.index, ids)
        return None if table is None else table.to_pylist()

    def results(self, lims: np.ndarray, dist: np.ndarray, ids: np.ndarray) -> list[dict[str, Any]]:
        """One {"ids", "distances"[, "metadata"]} object per query from CSR results."""
        rows = self.rows(ids)
        out = []
        for a, b in zip(lims[:-1], lims[1:]):
            item = {"ids": ids[a:b].tolist(), "distances": dist[a:b].tolist()}
            if rows is not None:
                item["metadata"] = rows[a:b]
            out.append(item)
        return out

    def schema(self) -> pa.Schema | None:
        if self.sharded:
            return self.index.metadata_schema
        return None if self.index.metadata is None else self.index.metadata.schema

    def next_ids(self, n: int) -> np.ndarray:
        """The ids a default add of n codes gets (after the largest id)."""
        first = self.index.next_id if self.sharded else (int(self.index.ids[-1]) + 1 if len(self.index) else 0)
        return np.arange(first, first + n, dtype=np.int64)

    def save(self) -> bool:
        """Save unsaved changes in place with the index's atomic save; True when it wrote."""
        with self.lock.write():
            if not self.dirty:
                return False
            self.index.save(self.path)
            self.dirty = False
            return True

    def info(self) -> dict[str, Any]:
        schema = self.schema()
        info = {"path": str(self.path), "nbits": self.index.nbits, "count": len(self.index),
                "backend": self.index.backend, "params": self.index.params, "sharded": self.sharded,
                "metadata_columns": [] if schema is None else schema.names, "unsaved_changes": self.dirty,
                "write_key_required": self.api_key is not None, "limits": asdict(self.limits)}
        if self.sharded:
            info.update(shards=self.index.nshards, replicas=self.index.replicas, counts=self.index.counts)
        return info


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(service: Service) -> FastAPI:
    """The FastAPI application over `service` (uvicorn runs it; tests call it in-process)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.save()  # at shutdown: unsaved changes go through the atomic save
        if service.sharded:
            service.index.close()

    app = FastAPI(title="hashsearch", summary="Exact Hamming-space search over learned binary codes",
                  version=_version(), lifespan=lifespan)

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is None:
                return error(411, "send a Content-Length header")
            if not length.isdigit() or int(length) > service.limits.max_body_bytes:
                return error(413, f"request body of {length} bytes exceeds the limit of "
                                  f"{service.limits.max_body_bytes} bytes")
        return await call_next(request)

    @app.exception_handler(ServiceError)
    async def on_service_error(request: Request, exc: ServiceError):
        return error(exc.status, str(exc))

    @app.exception_handler(HashsearchError)
    async def on_index_error(request: Request, exc: HashsearchError):
        if isinstance(exc, UnknownIdError):
            return error(404, str(exc))
        if isinstance(exc, InvalidInputError):
            return error(400, str(exc))
        return error(503, str(exc))  # a shard unavailable, a corrupt index

    @app.exception_handler(RequestValidationError)
    async def on_bad_request(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return error(422, f"{where}: {first.get('msg', 'invalid')}")

    def writer(x_api_key: str | None = Header(None, description="Required when the server has an API key")) -> None:
        if service.api_key is not None and x_api_key != service.api_key:
            raise ServiceError(401, f"missing or wrong {API_KEY_HEADER} header: writes need the server's API key")

    def check_k(k: int) -> None:
        if k > service.limits.max_k:
            raise ServiceError(413, f"k={k} exceeds the limit of {service.limits.max_k}")

    @app.post("/search", summary="The k nearest codes of each query, with their metadata")
    def search(body: SearchRequest) -> dict:
        check_k(body.k)
        q = service.decode(body)
        with service.lock.read():
            dist, ids = service.index.search(q, body.k, filter=as_filter(body.filter))
            found = ids >= 0
            lims = np.concatenate([[0], np.cumsum(found.sum(axis=1))])
            return {"results": service.results(lims, dist[found], ids[found])}

    @app.post("/range", summary="Every code within the radius (inclusive) of each query")
    def range_(body: RangeRequest) -> dict:
        q = service.decode(body)
        with service.lock.read():
            lims, dist, ids = service.index.range_search(
                q, body.radius, filter=as_filter(body.filter))
            if ids.size > service.limits.max_range_hits:
                raise ServiceError(413, f"{ids.size} range hits exceed the limit of {service.limits.max_range_hits}; "
                                        "lower the radius or send fewer queries")
            return {"results": service.results(lims, dist, ids)}

    @app.post("/add", summary="Add codes (with ids and metadata)", dependencies=[Depends(writer)])
    def add(body: AddRequest) -> dict:
        codes = service.decode(body)
        n = codes.shape[0]
        for name, given in (("ids", body.ids), ("metadata", body.metadata)):
            if given is not None and len(given) != n:
                raise ServiceError(400, f"{len(given)} {name} for {n} codes")
        with service.lock.write():
            ids = np.asarray(body.ids, np.int64) if body.ids is not None else service.next_ids(n)
            meta = None if body.metadata is None else _table(body.metadata, service.schema())
            service.index.add(codes, ids, meta)
            service.dirty = service.dirty or n > 0
        return {"added": n, "ids": ids.tolist()}

    @app.post("/remove", summary="Remove items by id", dependencies=[Depends(writer)])
    def remove(body: RemoveRequest) -> dict:
        if len(body.ids) > service.limits.max_batch:
            raise ServiceError(413, f"{len(body.ids)} ids in one request; the limit is {service.limits.max_batch}")
        with service.lock.write():
            removed = service.index.remove(np.asarray(body.ids, np.int64))
            service.dirty = service.dirty or removed > 0
        return {"removed": removed}

    @app.post("/save", summary="Save unsaved changes atomically", dependencies=[Depends(writer)])
    def save() -> dict:
        return {"saved": service.save()}

    @app.get("/info", summary="The index: bits, count, backend, shards, limits")
    def info() -> dict:
        with service.lock.read():
            return service.info()

    @app.get("/healthz", summary="Liveness")
    def healthz() -> dict:
        return {"status": "ok", "count": len(service.index)}

    return app


def _table(rows: list[dict[str, Any]], schema: pa.Schema | None) -> pa.Table:
    """Metadata rows as an Arrow table, typed like the index's columns when it has some."""
    try:
        return pa.Table.from_pylist(rows, schema=schema)
    except (pa.ArrowException, TypeError, ValueError, KeyError) as exc:
        raise ServiceError(400, f"metadata does not fit the index's columns: {exc}") from None


def _version() -> str:
    from hashsearch import __version__

    return __version__


def serve(index_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          limits: Limits = Limits(), replicas: int = 1, address: str | None = None) -> None:
    """Open the index and serve it with uvicorn until interrupted (changes are saved at shutdown)."""
    import uvicorn

    service = Service(index_dir, api_key=api_key, limits=limits, replicas=replicas, address=address)
    service.warm_up()
    uvicorn.run(create_app(service), host=host, port=port, log_level="warning")
