"""Which ASGI server: the bare Starlette endpoint of bench/agent_events.py under uvicorn
(uvloop + httptools) and under granian, same load, same run.

    .venv/bin/python bench/asgi_servers.py [--seconds 8]   # needs `pip install granian`
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.agent_events import FLOOR_APP, load, report, wait_http  # noqa: E402
from weftline.embedded import free_port  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--batch", type=int, default=50)
    args = ap.parse_args()
    servers = {
        "uvicorn (uvloop, httptools)": lambda port: [
            sys.executable,
            "-m",
            "uvicorn",
            "floor_app:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
        ],
    }
    if shutil.which("granian") or Path(sys.executable).with_name("granian").exists():
        granian = str(Path(sys.executable).with_name("granian"))
        servers["granian (asgi)"] = lambda port: [
            granian,
            "--interface",
            "asgi",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "floor_app:app",
        ]
    else:
        print("granian is not installed: measuring uvicorn only")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "floor_app.py").write_text(FLOOR_APP)
        for name, cmd in servers.items():
            port = free_port()
            proc = subprocess.Popen(cmd(port), cwd=tmp)
            try:
                wait_http(f"http://127.0.0.1:{port}/", proc)
                results[name] = asyncio.run(
                    load(
                        f"http://127.0.0.1:{port}/api/v1/events",
                        {},
                        args.seconds,
                        args.concurrency,
                        args.batch,
                    )
                )
            finally:
                proc.terminate()
                proc.wait()
    first = next(iter(results.values()))
    for name, r in results.items():
        report(name, r, None if r is first else first)
    return 0


if __name__ == "__main__":
    sys.exit(main())
