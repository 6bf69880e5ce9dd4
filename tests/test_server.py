"""`hashsearch serve`: answers equal the index's, with metadata; writes need the key; limits are
refused with a JSON error naming them; a real uvicorn process serves and saves at shutdown."""
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from hashsearch import HammingIndex

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from hashsearch.server import Limits, Service, create_app  # noqa: E402

KEY = "s3cret"


def make_index(path, n=400, nbits=32, seed=0):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (n, nbits // 8), dtype=np.uint8)
    index = HammingIndex(nbits, backend="mih")
    index.add(codes, np.arange(n) * 2, {"name": [f"item{i}" for i in range(n)]})
    index.save(path)
    return index, codes


@pytest.fixture()
def served(tmp_path):
    index, codes = make_index(tmp_path / "idx")
    service = Service(tmp_path / "idx", api_key=KEY, limits=Limits(max_batch=50, max_k=100, max_body_bytes=20_000))
    with TestClient(create_app(service)) as client:
        yield client, index, codes, tmp_path / "idx"


def test_search_and_range_equal_the_index_and_carry_metadata(served):
    client, index, codes, _ = served
    q = codes[:5] ^ np.uint8(3)
    got = client.post("/search", json={"codes": [c.tobytes().hex() for c in q], "k": 7}).json()["results"]
    dist, ids = index.search(q, 7)
    assert [r["ids"] for r in got] == ids.tolist() and [r["distances"] for r in got] == dist.tolist()
    assert got[0]["metadata"][0] == {"name": f"item{ids[0, 0] // 2}"}
    import base64
    got = client.post("/range", json={"codes": [base64.b64encode(c.tobytes()).decode() for c in q],
                                      "encoding": "base64", "radius": 8}).json()["results"]
    lims, dist, ids = index.range_search(q, 8)
    assert [r["ids"] for r in got] == [ids[a:b].tolist() for a, b in zip(lims[:-1], lims[1:])]
    info = client.get("/info").json()
    assert info["count"] == 400 and info["nbits"] == 32 and info["metadata_columns"] == ["name"]
    assert client.get("/healthz").json()["status"] == "ok"
    assert "/search" in client.get("/openapi.json").json()["paths"] and client.get("/docs").status_code == 200


def test_writes_need_the_key_and_save_atomically(served):
    client, index, codes, path = served
    body = {"codes": [codes[0].tobytes().hex()], "metadata": [{"name": "new"}]}
    refused = client.post("/add", json=body)
    assert refused.status_code == 401 and "X-API-Key" in refused.json()["error"]
    added = client.post("/add", json=body, headers={"X-API-Key": KEY}).json()
    assert added == {"added": 1, "ids": [799]}  # after the largest id, 798
    hit = client.post("/search", json={"codes": [codes[0].tobytes().hex()], "k": 2}).json()["results"][0]
    assert hit["ids"] == [0, 799] and hit["metadata"][1] == {"name": "new"}
    assert client.post("/remove", json={"ids": [0, 2]}, headers={"X-API-Key": KEY}).json() == {"removed": 2}
    missing = client.post("/remove", json={"ids": [1]}, headers={"X-API-Key": KEY})
    assert missing.status_code == 404 and "id 1 is not in the index" in missing.json()["error"]
    assert client.post("/save", headers={"X-API-Key": KEY}).json() == {"saved": True}
    saved = HammingIndex.load(path)
    assert len(saved) == 399 and saved.ids[-1] == 799 and 0 not in saved.ids
    assert sorted(p.name for p in path.parent.iterdir()) == ["idx"]


@pytest.mark.parametrize("body, status, words", [
    ({"codes": ["00" * 4] * 51, "k": 1}, 413, "51 codes in one request; the limit is 50"),
    ({"codes": ["00" * 4], "k": 101}, 413, "k=101 exceeds the limit of 100"),
    ({"codes": ["00" * 4], "k": 0}, 422, "k: Input should be greater than or equal to 1"),
    ({"codes": ["zz" * 4], "k": 1}, 400, "codes[0] is not valid hex"),
    ({"codes": ["00" * 8], "k": 1}, 400, "codes[0] has 8 bytes; this index holds 32-bit codes (4 bytes)"),
    ({"codes": ["00" * 4], "k": 1, "filter": {"name": "x"}}, 422, "filter"),
    ({"codes": ["00" * 4], "k": 1, "filter": "colour == 1"}, 400, "unknown column"),
    ({"codes": ["00" * 4] * 40, "k": 1, "pad": "x" * 20_000}, 413, "exceeds the limit of 20000 bytes"),
])
def test_bad_requests_get_a_json_error_naming_the_problem(served, body, status, words):
    reply = served[0].post("/search", json=body)
    assert reply.status_code == status and words in reply.json()["error"]


def test_concurrent_reads_and_writes_stay_exact(served):
    client, _, codes, _ = served
    errors = []

    def reader():
        for _ in range(15):
            got = client.post("/search", json={"codes": [codes[5].tobytes().hex()], "k": 1}).json()["results"][0]
            if got["ids"] != [10] or got["distances"] != [0]:
                errors.append(got)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(10):
        client.post("/add", json={"codes": [codes[7].tobytes().hex()], "metadata": [{"name": str(i)}]},
                    headers={"X-API-Key": KEY})
    for t in threads:
        t.join()
    assert not errors and client.get("/info").json()["count"] == 410


def test_a_sharded_index_is_served_like_a_single_one(ray_local, tmp_path):
    from hashsearch.sharded import write_sharded

    index, codes = make_index(tmp_path / "one", n=300)
    write_sharded(tmp_path / "sh", codes, index.ids, 3, backend="mih", metadata=index.metadata)
    with TestClient(create_app(Service(tmp_path / "sh"))) as client:
        got = client.post("/search", json={"codes": [c.tobytes().hex() for c in codes[:4]], "k": 5}).json()["results"]
        dist, ids = index.search(codes[:4], 5)
        assert [r["ids"] for r in got] == ids.tolist() and [r["distances"] for r in got] == dist.tolist()
        assert got[2]["metadata"][0] == {"name": "item2"}
        assert client.get("/info").json()["shards"] == 3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_real_uvicorn_process_serves_and_saves_at_shutdown(tmp_path):
    index, codes = make_index(tmp_path / "idx", n=200)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "hashsearch.cli", "serve", str(tmp_path / "idx"), "--port",
                             str(port), "--api-key", KEY, "--max-batch", "10"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    http = httpx.Client(timeout=60)  # generous: on a slow, loaded machine answers come, only later
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if http.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the server did not start: {proc.stderr.read()}")
                time.sleep(0.3)
        got = http.post(f"{url}/search", json={"codes": [codes[3].tobytes().hex()], "k": 3}).json()["results"][0]
        dist, ids = index.search(codes[3], 3)
        assert got["ids"] == ids[0].tolist() and got["distances"] == dist[0].tolist()
        lims, _, rids = index.range_search(codes[3], 10)
        assert http.post(f"{url}/range", json={"codes": [codes[3].tobytes().hex()], "radius": 10}).json()["results"][0]["ids"] \
            == rids.tolist()
        assert http.post(f"{url}/add", json={"codes": [codes[3].tobytes().hex()], "metadata": [{"name": "x"}]}).status_code == 401
        key = {"X-API-Key": KEY}
        assert http.post(f"{url}/add", json={"codes": [codes[3].tobytes().hex()], "metadata": [{"name": "x"}]},
                          headers=key).json()["ids"] == [399]
        assert http.post(f"{url}/remove", json={"ids": [6]}, headers=key).json() == {"removed": 1}
        big = http.post(f"{url}/search", json={"codes": [codes[0].tobytes().hex()] * 11, "k": 1})
        assert big.status_code == 413 and "limit is 10" in big.json()["error"]
    finally:
        http.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    saved = HammingIndex.load(tmp_path / "idx")  # the shutdown saved the changes, atomically
    assert len(saved) == 200 and saved.ids[-1] == 399 and 6 not in saved.ids
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]
