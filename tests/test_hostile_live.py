"""Live readers have their own budget (issue #13): many SSE readers never take the
connections ingest needs; past the caps a clear 429/503; idle streams are closed."""

from __future__ import annotations

import threading
import time

import httpx
import orjson

from tests.test_agent_ingest import post, state


def open_stream(client: httpx.Client, url: str, token: str):
    cm = client.stream("GET", url + "/api/v1/live", headers={"authorization": f"Bearer {token}"})
    return cm, cm.__enter__()


def test_readers_share_one_subscription_within_caps(settings, valkey, vk, ch, serve):
    # The 200 readers (which once took every pooled connection: ingest 503).
    settings.live_max_streams = 200
    settings.live_max_streams_per_token = 150
    srv = serve(settings, valkey.url, ch=ch)
    p1, p2 = settings.projects
    before = vk.info("clients")["connected_clients"]
    client = httpx.Client(timeout=20, limits=httpx.Limits(max_connections=300))
    opened = []
    try:
        for _ in range(150):
            opened.append(open_stream(client, srv.url, p1.query_token))
        assert all(r.status_code == 200 for _, r in opened)
        # 150 readers, one Valkey subscription: the connections are not the readers'.
        assert vk.info("clients")["connected_clients"] - before <= 3
        r = client.get(
            srv.url + "/api/v1/live", headers={"authorization": f"Bearer {p1.query_token}"}
        )
        assert r.status_code == 429 and r.json()["error"] == "too_many_live_streams"
        assert r.headers["retry-after"]
        for _ in range(50):
            opened.append(open_stream(client, srv.url, p2.query_token))
        r = client.get(
            srv.url + "/api/v1/live", headers={"authorization": f"Bearer {p2.query_token}"}
        )
        assert r.status_code == 503 and r.json()["error"] == "live_streams_full"
        # Ingest and readiness do not wait for the readers.
        started = time.monotonic()
        assert post(client, srv, p1, [state("during-live")]).status_code == 202
        assert time.monotonic() - started < 2
        assert client.get(srv.url + "/readyz").status_code == 200
        # Every reader of project 1 gets the event (fanned out in-process).
        got: list[str] = []
        lock = threading.Lock()

        def read(resp) -> None:
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    with lock:
                        got.append(orjson.loads(line[6:])["agent_id"])
                    return

        threads = [threading.Thread(target=read, args=(r,), daemon=True) for _, r in opened[:3]]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        assert got == ["during-live"] * 3
    finally:
        for cm, _ in opened:
            cm.__exit__(None, None, None)
        client.close()


def test_idle_streams_are_closed(settings, valkey, ch, serve):
    settings.live_idle_seconds = 1.0
    srv = serve(settings, valkey.url, ch=ch)
    p1 = settings.projects[0]
    started = time.monotonic()
    with httpx.Client(timeout=20) as c:
        with c.stream(
            "GET", srv.url + "/api/v1/live", headers={"authorization": f"Bearer {p1.query_token}"}
        ) as r:
            lines = list(r.iter_lines())  # ends when the server closes the stream
    assert time.monotonic() - started < 5
    assert any("idle, closing" in line for line in lines)
    # and the slot is free again
    with httpx.Client(timeout=20) as c:
        with c.stream(
            "GET", srv.url + "/api/v1/live", headers={"authorization": f"Bearer {p1.query_token}"}
        ) as r:
            assert r.status_code == 200
