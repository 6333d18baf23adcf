"""What every ingest benchmark shares: wrk as the load generator, pinned servers, the floor.

A load generator written in Python saturates at a few hundred requests per second on this
kind of machine, so every figure it gives measures itself (`/work/shared/reference/
benchmarks.md`). Here:

- the load comes from `wrk` (Debian package `wrk`, installed on first use when possible),
  pinned with `taskset` to a core the server does not use; its requests are built once in
  Python, byte for byte, and replayed by a small Lua script (`request()` returns them in
  turn; a 32-character marker in a request is replaced by a fresh hex id per request, for
  protocols whose items carry their own id, e.g. Sentry's `event_id`);
- every server (the floor, `weftline up`, a peer) is started under `taskset` on the server
  core(s); Valkey and chDB's threads inherit the affinity, so "one core" means everything;
- the floor is a bare Starlette endpoint that reads the body, under the same uvicorn flags,
  measured in the same run with the same requests;
- a ratio is printed only when the load generator was not the bottleneck: wrk used less
  than 90 % of its core during the floor run, and the floor stayed below 80 % of what wrk
  reaches against a static answer (a raw uvloop protocol that skips the body).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from weftline.embedded import free_port  # noqa: E402

UVICORN_FLAGS = ["--http", "httptools", "--loop", "uvloop", "--no-access-log"]
UVICORN_FLAGS += ["--log-level", "warning"]
ID_MARKER = b"WLIDWLIDWLIDWLIDWLIDWLIDWLIDWLID"  # 32 bytes, as long as the id that replaces it
WRK_SATURATED = 0.9  # share of its core above which wrk itself limits the rate
FLOOR_NEAR_CEILING = 0.8  # floor/static above this: the generator, not the floor, limits


# ---------------------------------------------------------------------------- machine


@dataclass(frozen=True)
class Cores:
    server: str  # taskset list for the servers, e.g. "0" or "0,1"
    load: str  # taskset list for wrk

    @property
    def server_count(self) -> int:
        return len(self.server.split(","))


def cores(server_cores: int = 1) -> Cores:
    """The first `server_cores` CPUs for the server, the last one for wrk. With every CPU
    given to the server, wrk shares the last one (said in the output)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("needs at least 2 CPUs: one for the server, one for wrk")
    if server_cores > len(cpus):
        raise SystemExit(f"--cores {server_cores}: this machine has {len(cpus)} CPUs")
    return Cores(",".join(map(str, cpus[:server_cores])), str(cpus[-1]))


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def ensure_wrk() -> str:
    """wrk's path; installs the Debian package when missing, or exits saying how."""
    found = shutil.which("wrk")
    if found:
        return found
    if shutil.which("apt-get"):
        cmd = ["apt-get", "install", "-y", "wrk"]
        if os.geteuid() != 0:
            cmd = ["sudo", "-n", *cmd] if shutil.which("sudo") else []
        for attempt in ([cmd], [["apt-get", "update"], cmd]) if cmd else ():
            if cmd[0] == "sudo":
                attempt = [a if a[0] == "sudo" else ["sudo", "-n", *a] for a in attempt]
            print(f"wrk is missing; running {' && '.join(' '.join(a) for a in attempt)}")
            if all(subprocess.run(a, capture_output=True).returncode == 0 for a in attempt):
                break
        found = shutil.which("wrk")
        if found:
            return found
    raise SystemExit(
        "these benchmarks need wrk (a C load generator; a Python one would measure itself)"
        " and it could not be installed here: install it (Debian/Ubuntu: "
        "`sudo apt-get install wrk`, macOS: `brew install wrk`) and run again"
    )


# ---------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str  # with its query string
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    def raw(self) -> bytes:
        head = [f"{self.method} {self.path} HTTP/1.1", "Host: 127.0.0.1"]
        head += [f"{k}: {v}" for k, v in self.headers.items()]
        head.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + self.body


LUA = textwrap.dedent(
    """
    -- Replays requests built in Python (raw HTTP/1.1 bytes), in turn; a marker in a
    -- request becomes a fresh 32-hex-digit id each time it is sent.
    local marker = "%(marker)s"
    local reqs, n, i, salt, sent = {}, 0, 0, "%(salt)s", 0
    local delay_ms = %(delay_ms)s

    local function split(s)
      local parts, from = {}, 1
      while true do
        local a, b = string.find(s, marker, from, true)
        if not a then break end
        parts[#parts + 1] = string.sub(s, from, a - 1)
        from = b + 1
      end
      if #parts == 0 then return s end
      parts[#parts + 1] = string.sub(s, from)
      return parts
    end

    local tid = 0
    function setup(thread)
      tid = tid + 1
      thread:set("tid", tid)
    end

    function init(args)
      local f = assert(io.open("%(blob)s", "rb"))
      local blob = f:read("*a")
      f:close()
      for line in io.lines("%(index)s") do
        local off, len = string.match(line, "(%%d+) (%%d+)")
        n = n + 1
        reqs[n] = split(string.sub(blob, off + 1, off + len))
      end
      i = (%(offset)s + (tid or 1) - 1) %% n
    end

    function request()
      i = i %% n + 1
      local r = reqs[i]
      if type(r) == "string" then return r end
      sent = sent + 1
      local id = string.format("%%s%%02x%%014x", salt, (tid or 1) %% 256, sent)
      return table.concat(r, id)
    end

    if delay_ms > 0 then
      function delay() return delay_ms end
    end

    function done(summary, latency, requests)
      local e = summary.errors
      io.write(string.format(
        'WRKJSON {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,' ..
        '"write":%%d,"status":%%d,"timeout":%%d,"p50":%%d,"p90":%%d,"p99":%%d,"max":%%d}\\n',
        summary.requests, summary.duration, e.connect, e.read, e.write, e.status,
        e.timeout, latency:percentile(50), latency:percentile(90),
        latency:percentile(99), latency.max))
    end
    """
)


@dataclass
class WrkResult:
    requests: int
    seconds: float
    errors: int  # connect/read/write/timeout
    non_2xx: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    wrk_cpu: float  # share of one core wrk used
    connections: int

    @property
    def ok(self) -> int:
        return self.requests - self.non_2xx

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def line(self, name: str, items: float = 0, unit: str = "") -> str:
        per = f" {self.rps * items:>10,.0f} {unit}/s" if items else ""
        bad = f"  non-2xx {self.non_2xx}" if self.non_2xx else ""
        bad += f"  socket errors {self.errors}" if self.errors else ""
        return (
            f"{name:<36} {self.rps:>8,.0f} req/s{per}  p50 {self.p50_ms:6.1f} ms"
            f"  p99 {self.p99_ms:6.1f} ms  (wrk {self.wrk_cpu:.0%} of its core){bad}"
        )


class Wrk:
    """One set of requests, replayed by wrk against any base URL."""

    def __init__(self, requests: Sequence[HttpRequest], workdir: Path, cores: Cores) -> None:
        self.exe = ensure_wrk()
        self.cores = cores
        self.dir = Path(tempfile.mkdtemp(prefix="wrk-", dir=workdir))
        offset, index = 0, []
        with (self.dir / "requests.bin").open("wb") as blob:
            for r in requests:
                raw = r.raw()
                blob.write(raw)
                index.append(f"{offset} {len(raw)}")
                offset += len(raw)
        (self.dir / "requests.idx").write_text("\n".join(index) + "\n")
        self.count = len(requests)
        self.body_bytes = sum(len(r.body) for r in requests) / max(1, len(requests))

    def run(
        self,
        base: str,
        seconds: float,
        connections: int = 32,
        rate: float | None = None,
        offset: int = 0,
    ) -> WrkResult:
        """`rate` (req/s, all connections together) paces each connection with wrk's
        delay() (between an answer and the next request): a 2 s run at the bare interval
        measures the latency, which is then taken off the delay. Without it, as fast as
        the server answers. `offset`: the first request to send (a later run goes on where
        an earlier one stopped, so no request is sent twice)."""
        delay = 0
        if rate:
            interval = connections * 1000 / rate
            probe = self._run(base, 2, connections, max(1, int(interval)), offset)
            offset += probe.requests + connections  # past what was still in flight
            delay = max(1, int(interval - probe.p50_ms))
        return self._run(base, seconds, connections, delay, offset)

    def _run(
        self, base: str, seconds: float, connections: int, delay: int, offset: int = 0
    ) -> WrkResult:
        script = self.dir / f"run-{secrets.token_hex(4)}.lua"
        script.write_text(
            LUA
            % {
                "marker": ID_MARKER.decode(),
                "salt": secrets.token_hex(8),
                "blob": self.dir / "requests.bin",
                "index": self.dir / "requests.idx",
                "delay_ms": delay,
                "offset": offset % max(1, self.count),
            }
        )
        cmd = ["taskset", "-c", self.cores.load, self.exe, "-t1", f"-c{connections}"]
        cmd += [f"-d{seconds:g}s", "--timeout", "10s", "-s", str(script), base]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        m = re.search(r"^WRKJSON (.*)$", out.stdout, re.M)
        if out.returncode or not m:
            raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-1500:]}{out.stderr}")
        d = json.loads(m.group(1))
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return WrkResult(
            requests=d["requests"],
            seconds=d["duration_us"] / 1e6,
            errors=d["connect"] + d["read"] + d["write"] + d["timeout"],
            non_2xx=d["status"],
            p50_ms=d["p50"] / 1000,
            p90_ms=d["p90"] / 1000,
            p99_ms=d["p99"] / 1000,
            wrk_cpu=cpu / wall,
            connections=connections,
        )


# ---------------------------------------------------------------------------- servers


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


@contextlib.contextmanager
def pinned(
    cmd: list[str],
    cores: Cores,
    ready_url: str,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> Iterator[subprocess.Popen]:
    """A server started under `taskset -c <server cores>`, stopped (SIGTERM) on exit."""
    out = log.open("w") if log else subprocess.DEVNULL
    proc = subprocess.Popen(
        ["taskset", "-c", cores.server, *cmd],
        cwd=cwd,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(ready_url, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            out.close()  # type: ignore[union-attr]


def bench_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("VALKEY_URL", None)
    env.pop("CLICKHOUSE_URL", None)
    return env


@dataclass(frozen=True)
class FloorRoute:
    path: str  # Starlette path, e.g. "/api/{pid}/envelope/"
    status: int = 200
    body: bytes = b""
    media_type: str = "application/json"


FLOOR_APP = """
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route


def endpoint(status, body, media_type):
    async def handle(request):
        await request.body()
        return Response(body, status_code=status, media_type=media_type)

    return handle


app = Starlette(routes=[
    Route(path, endpoint(status, body, media_type), methods=["POST"])
    for path, status, body, media_type in ROUTES
])
"""

STATIC_APP = """
# Answers every request with a fixed 200 and never parses it beyond finding where it ends:
# the most a Python server on this core can do, i.e. what wrk can reach here.
import asyncio, sys
import uvloop

RESPONSE = b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\ncontent-type: text/plain\\r\\n\\r\\nok"


class Static(asyncio.Protocol):
    def connection_made(self, transport):
        self.t, self.buf, self.need = transport, bytearray(), -1

    def data_received(self, data):
        buf = self.buf
        buf += data
        while True:
            if self.need < 0:
                end = buf.find(b"\\r\\n\\r\\n")
                if end < 0:
                    return
                i = buf.find(b"Content-Length: ", 0, end)
                n = int(buf[i + 16:buf.index(b"\\r", i)]) if i >= 0 else 0
                self.need = end + 4 + n
            if len(buf) < self.need:
                return
            del buf[:self.need]
            self.need = -1
            self.t.write(RESPONSE)


async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Static, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    await server.serve_forever()

uvloop.run(main())
"""


@contextlib.contextmanager
def floor_server(routes: Sequence[FloorRoute], workdir: Path, cores: Cores) -> Iterator[str]:
    """The bare Starlette floor with `routes`, under Weftline's uvicorn flags; its base URL."""
    app_dir = Path(tempfile.mkdtemp(prefix="floor-", dir=workdir))
    spec = [(r.path, r.status, r.body, r.media_type) for r in routes]
    (app_dir / "floor_app.py").write_text(f"ROUTES = {spec!r}\n" + FLOOR_APP)
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "floor_app:app", "--port", str(port), *UVICORN_FLAGS]
    with pinned(
        cmd,
        cores,
        f"http://127.0.0.1:{port}/",
        cwd=app_dir,
        env={**bench_env(), "PYTHONPATH": str(app_dir)},
    ):
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def static_server(workdir: Path, cores: Cores) -> Iterator[str]:
    app = Path(tempfile.mkdtemp(prefix="static-", dir=workdir)) / "static_app.py"
    app.write_text(STATIC_APP)
    port = free_port()
    with pinned([sys.executable, str(app), str(port)], cores, f"http://127.0.0.1:{port}/"):
        yield f"http://127.0.0.1:{port}"


@dataclass
class Embedded:
    proc: subprocess.Popen
    base: str
    key: str
    token: str
    data: Path
    log: Path

    def metrics(self) -> str:
        return httpx.get(f"{self.base}/metrics", timeout=30).text

    def metric(self, pattern: str) -> float:
        m = re.search("^" + pattern + r" (\S+)$", self.metrics(), re.M)
        return float(m.group(1)) if m else 0.0

    def backlog(self, kind: str) -> float:
        return self.metric(rf'weftline_stream_backlog_entries\{{kind="{kind}"\}}')

    def processed(self, kind: str) -> float:
        return self.metric(rf'weftline_worker_processed_entries_total\{{kind="{kind}"\}}')

    def accepted(self, kind: str) -> tuple[float, float]:
        """(requests, items) the edge accepted into the buffer, as the server counts them
        (wrk does not count the requests in flight when its time is up)."""
        text = self.metrics()
        got = []
        for what in ("requests", "items"):
            m = re.search(
                rf'^weftline_ingest_accepted_{what}_total\{{kind="{kind}"\}} (\S+)$', text, re.M
            )
            got.append(float(m.group(1)) if m else 0.0)
        return got[0], got[1]

    def drain(self, kind: str, limit: float = 300) -> float:
        """Seconds until the `kind` stream's backlog is 0 again (polled every 100 ms)."""
        t0 = time.perf_counter()
        while self.backlog(kind) > 0:
            if time.perf_counter() - t0 > limit:
                raise SystemExit(f"the {kind} backlog did not drain within {limit:.0f} s")
            time.sleep(0.1)
        return time.perf_counter() - t0


@contextlib.contextmanager
def embedded(
    workdir: Path,
    cores: Cores,
    kind: str,
    retention_days: int | None = None,
    extra_env: dict[str, str] | None = None,
    key: str | None = None,
) -> Iterator[Embedded]:
    """`weftline up` (embedded Valkey + chDB + workers) pinned to the server cores, with a
    bench project whose rate limit is lifted and the `kind` stream's backlog budget
    raised, so neither caps the run."""
    port = free_port()
    key, token = key or secrets.token_hex(16), secrets.token_hex(20)
    data = Path(tempfile.mkdtemp(prefix="up-", dir=workdir)) / "data"
    data.mkdir()
    (data / "demo-project.toml").write_text(
        f'id = 1\nname = "bench"\npublic_key = "{key}"\nquery_token = "{token}"\n'
        "rate_limit = 1000000.0\n"
        + (f"retention_days = {retention_days}\n" if retention_days else "")
    )
    env = {**bench_env(), f"WEFTLINE_BACKLOG_BUDGET__{kind.upper()}": "10000000"}
    env.update(extra_env or {})
    cmd = [sys.executable, "-m", "weftline.cli", "up", "--port", str(port)]
    cmd += ["--data-dir", str(data), "--log-level", "warning"]
    base = f"http://127.0.0.1:{port}"
    log = data.parent / "up.log"
    with pinned(cmd, cores, f"{base}/healthz", env=env, log=log) as proc:
        yield Embedded(proc, base, key, token, data, log)


# ---------------------------------------------------------------------------- verdicts


@dataclass
class Ceiling:
    static: WrkResult
    floor: WrkResult

    def problem(self) -> str | None:
        """Why ratios to this floor would measure wrk, or None when they are sound."""
        if self.floor.wrk_cpu >= WRK_SATURATED:
            return f"wrk used {self.floor.wrk_cpu:.0%} of its core against the floor"
        if self.floor.rps >= FLOOR_NEAR_CEILING * self.static.rps:
            return (
                f"the floor ({self.floor.rps:,.0f} req/s) is within "
                f"{1 - FLOOR_NEAR_CEILING:.0%} of what wrk reaches against a static answer "
                f"({self.static.rps:,.0f} req/s)"
            )
        return None


def measure_floor(
    wrk: Wrk,
    routes: Sequence[FloorRoute],
    workdir: Path,
    seconds: float,
    connections: int,
) -> Ceiling:
    with static_server(workdir, wrk.cores) as base:
        static = wrk.run(base, seconds, connections)
    with floor_server(routes, workdir, wrk.cores) as base:
        floor = wrk.run(base, seconds, connections)
    return Ceiling(static, floor)


@dataclass
class Rounds:
    """The floor and Weftline measured in alternating slices of the same run: on a shared
    machine the load moves within a minute, and a ratio of two runs a minute apart says
    more about the neighbours than about Weftline. Each round: the stream drained, a
    floor slice, a Weftline slice, then the time until its backlog is drained again."""

    static: WrkResult
    floor: list[WrkResult]
    weftline: list[WrkResult]
    accepted_items: list[float]
    drains: list[float]
    next_offset: int = 0  # where a further run should start, so nothing is sent twice

    @staticmethod
    def _total(results: list[WrkResult]) -> WrkResult:
        return WrkResult(
            requests=sum(r.requests for r in results),
            seconds=sum(r.seconds for r in results),
            errors=sum(r.errors for r in results),
            non_2xx=sum(r.non_2xx for r in results),
            p50_ms=statistics.median(r.p50_ms for r in results),
            p90_ms=statistics.median(r.p90_ms for r in results),
            p99_ms=statistics.median(r.p99_ms for r in results),
            wrk_cpu=max(r.wrk_cpu for r in results),
            connections=results[0].connections,
        )

    @property
    def floor_total(self) -> WrkResult:
        return self._total(self.floor)

    @property
    def weftline_total(self) -> WrkResult:
        return self._total(self.weftline)

    @property
    def ceiling(self) -> Ceiling:
        return Ceiling(self.static, self.floor_total)

    def ratios(self) -> list[float]:
        return [w.rps / f.rps for f, w in zip(self.floor, self.weftline, strict=True) if f.rps]

    def ratio_text(self) -> str:
        problem = self.ceiling.problem()
        if problem:
            return f"no ratio: {problem}"
        rs = self.ratios()
        spread = ", ".join(f"{r:.3f}" for r in rs)
        return f"{statistics.median(rs):.3f}× floor (median of rounds: {spread})"

    def stored_rate(self) -> float:
        """Items accepted over load time plus the time until each backlog was drained."""
        busy = sum(w.seconds for w in self.weftline) + sum(self.drains)
        return sum(self.accepted_items) / busy if busy else 0.0


def rounds(
    wrk: Wrk,
    routes: Sequence[FloorRoute],
    workdir: Path,
    wl: Embedded,
    kind: str,
    seconds: float,
    connections: int,
    count: int = 3,
) -> Rounds:
    """`seconds` of load on each of the floor and Weftline, in `count` alternating slices;
    Weftline's requests go on where the previous slice stopped."""
    with static_server(workdir, wrk.cores) as base:
        static = wrk.run(base, min(seconds, 5), connections)
    floors, wls, items, drains = [], [], [], []
    sent = 0
    with floor_server(routes, workdir, wrk.cores) as floor_base:
        for _ in range(count):
            wl.drain(kind)
            floors.append(wrk.run(floor_base, seconds / count, connections))
            before = wl.accepted(kind)
            w = wrk.run(wl.base, seconds / count, connections, offset=sent)
            # past the requests still in flight when wrk stopped (sent, not counted)
            sent += w.requests + connections
            drains.append(wl.drain(kind))
            after = wl.accepted(kind)
            wls.append(w)
            items.append(after[1] - before[1])
    return Rounds(static, floors, wls, items, drains, sent)


def ratio(value: float, floor: float, ceiling: Ceiling) -> str:
    problem = ceiling.problem()
    if problem:
        return f"no ratio: {problem}"
    return f"{value / floor:.3f}× floor"


def header(title: str, wrk: Wrk, seconds: float, connections: int) -> str:
    cores_ = wrk.cores
    shared = " (wrk shares a server core)" if cores_.load in cores_.server.split(",") else ""
    return (
        f"\n{title}\n"
        f"server on CPU {cores_.server}, wrk (1 thread, {connections} connections, "
        f"{seconds:g} s) on CPU {cores_.load}{shared}; {wrk.count} distinct requests, "
        f"body {wrk.body_bytes:,.0f} bytes on average; load average before: {loadavg()}"
    )


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------------------- profiles


class Profile:
    """py-spy (pip `py-spy`) sampling a server while wrk loads it; py-spy runs on wrk's
    core so the server keeps its own. `--profile FILE` in the benchmarks."""

    def __init__(self, path: Path | None, cpus: Cores) -> None:
        self.path = path
        self.cpus = cpus
        self.proc: subprocess.Popen | None = None

    def start(self, pid: int, seconds: float) -> None:
        if self.path is None:
            return
        exe = Path(sys.executable).with_name("py-spy")
        if not exe.exists():
            raise SystemExit(f"--profile needs py-spy: {sys.executable} -m pip install py-spy")
        cmd = ["taskset", "-c", self.cpus.load, str(exe), "record", "-p", str(pid)]
        cmd += [
            "-d",
            str(max(1, int(seconds))),
            "-r",
            "100",
            "-f",
            "raw",
            "--gil",
            "-o",
            str(self.path),
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def summary(self, top: int = 25) -> str:
        if self.proc is None or self.path is None:
            return ""
        self.proc.wait(120)
        return summarize(self.path, top)


def summarize(path: Path, top: int = 25) -> str:
    """Where the samples are: inclusive share of each frame (file:function), biggest
    first, skipping the event loop's own frames that hold everything."""
    inclusive: dict[str, int] = {}
    leaf: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        names = []
        for frame in stack.split(";"):
            m = re.match(r"(.*?) \((.*?)(?::\d+)?\)$", frame)
            fn, file = (m.group(1), m.group(2)) if m else (frame, "")
            names.append(f"{'/'.join(Path(file).parts[-2:])}:{fn}")
        for name in set(names):
            inclusive[name] = inclusive.get(name, 0) + n
        leaf[names[-1]] = leaf.get(names[-1], 0) + n
    if not total:
        return "profile: no samples"
    rows = [f"profile: {total} samples (100 Hz) of the server process (thread holding the GIL)"]
    rows.append("  inclusive:")
    for name, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[: top * 2]:
        if n / total < 0.97:
            rows.append(f"    {n / total:6.1%}  {name}")
    rows.append("  self:")
    for name, n in sorted(leaf.items(), key=lambda kv: -kv[1])[:top]:
        rows.append(f"    {n / total:6.1%}  {name}")
    return "\n".join(rows)


def rounds_report(r: Rounds, items: float, unit: str) -> list[str]:
    """The standard lines: what wrk reaches, the floor, Weftline, the ratio, stored."""
    w = r.weftline_total
    return [
        r.static.line("wrk vs a static answer"),
        r.floor_total.line(f"floor (bare Starlette), {len(r.floor)} slices", items, unit),
        w.line(f"weftline edge, {len(r.weftline)} slices", items, unit),
        f"{'':<36} {r.ratio_text()}; load avg {loadavg()}",
        f"{'stored end to end':<36} {sum(r.accepted_items):,.0f} {unit} accepted, backlogs "
        f"drained {sum(r.drains):.1f} s after the slices: {r.stored_rate():,.0f} {unit}/s",
    ]
