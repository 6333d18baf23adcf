"""Which ASGI server: the bare Starlette floor under uvicorn (uvloop + httptools) and under
granian, same wrk load, same core, same run.

    .venv/bin/python bench/asgi_servers.py [--seconds 8] [--connections 32]
    # granian: `.venv/bin/python -m pip install granian`; measured only when installed
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.agent_events import batch_body  # noqa: E402
from bench.harness import (  # noqa: E402
    FLOOR_APP,
    FloorRoute,
    HttpRequest,
    Wrk,
    cores,
    header,
    measure_floor,
    pinned,
    ratio,
)
from weftline.embedded import free_port  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    cpus = cores(1)
    route = FloorRoute("/api/v1/events", 202, b'{"accepted":50}')
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        body = batch_body(50, secrets.token_hex(4))
        wrk = Wrk([HttpRequest("POST", "/api/v1/events", body)], tmp, cpus)
        print(header("the floor under two ASGI servers", wrk, args.seconds, args.connections))
        ceiling = measure_floor(wrk, [route], tmp, args.seconds, args.connections)
        print(ceiling.static.line("wrk vs a static answer"))
        print(ceiling.floor.line("uvicorn (uvloop, httptools)"))
        granian = Path(sys.executable).with_name("granian")
        if not granian.exists() and not shutil.which("granian"):
            print("granian is not installed: measured uvicorn only")
            return 0
        app_dir = tmp / "granian"
        app_dir.mkdir()
        spec = [(route.path, route.status, route.body, route.media_type)]
        (app_dir / "floor_app.py").write_text(f"ROUTES = {spec!r}\n" + FLOOR_APP)
        port = free_port()
        cmd = [str(granian), "--interface", "asgi", "--port", str(port)]
        cmd += ["--log-level", "warning", "floor_app:app"]
        with pinned(cmd, cpus, f"http://127.0.0.1:{port}/", cwd=app_dir):
            g = wrk.run(f"http://127.0.0.1:{port}", args.seconds, args.connections)
        print(g.line("granian (asgi)"))
        print(f"{'':<36} granian {ratio(g.rps, ceiling.floor.rps, ceiling)} (uvicorn)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
