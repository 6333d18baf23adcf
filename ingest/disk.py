"""The disk reserve: refuse new data before the data folder fills up.

A full disk does not lose what Valkey already holds, but it stops ClickHouse from writing
(and merging) and Valkey from appending to its AOF. So the edge refuses up front while free
space under a data folder is below the reserve, and the workers keep draining what was
accepted. Free space is read with statvfs at most once per interval (cheap, and off the
hot path of every request), and each transition is logged once.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from weftline.ground.config import Settings
from weftline.ground.metrics import DISK_FREE, DISK_RESERVE

log = logging.getLogger("weftline.disk")


@dataclass(frozen=True)
class FolderSpace:
    name: str  # a fixed label: "valkey" or "clickhouse"
    path: Path
    free: int
    reserve: int

    @property
    def low(self) -> bool:
        return self.free < self.reserve


def _existing(path: Path) -> Path:
    """The folder itself or, before it is created, its nearest existing parent."""
    p = path.resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def embedded_folders(settings: Settings) -> dict[str, Path]:
    """The folders this process writes to: only embedded parts (a server's disk is its own
    business; ClickHouse server errors are retried, never acknowledged)."""
    out: dict[str, Path] = {}
    if settings.embedded_valkey:
        out["valkey"] = Path(settings.data_dir) / "valkey"
    if settings.embedded_clickhouse:
        out["clickhouse"] = Path(settings.data_dir) / "clickhouse"
    return out


class DiskReserve:
    def __init__(
        self,
        folders: dict[str, Path],
        reserve_bytes: int,
        reserve_percent: float,
        interval: float = 1.0,
    ) -> None:
        self.folders = folders
        self.reserve_bytes = reserve_bytes
        self.reserve_percent = reserve_percent
        self.interval = interval
        self.enabled = bool(folders) and (reserve_bytes > 0 or reserve_percent > 0)
        self._checked = 0.0
        self._spaces: list[FolderSpace] = []
        self._low: set[str] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> DiskReserve:
        return cls(
            embedded_folders(settings),
            settings.disk_reserve_bytes,
            settings.disk_reserve_percent,
            settings.disk_check_interval_seconds,
        )

    def measure(self) -> list[FolderSpace]:
        spaces = []
        for name, path in self.folders.items():
            st = os.statvfs(_existing(path))
            total = st.f_blocks * st.f_frsize
            reserve = max(self.reserve_bytes, int(total * self.reserve_percent / 100))
            space = FolderSpace(name, path, st.f_bavail * st.f_frsize, reserve)
            DISK_FREE.labels(name).set(space.free)
            DISK_RESERVE.labels(name).set(reserve)
            spaces.append(space)
            self._note(space)
        self._spaces = spaces
        self._checked = time.monotonic()
        return spaces

    def _note(self, space: FolderSpace) -> None:
        if space.low and space.name not in self._low:
            self._low.add(space.name)
            log.warning(
                "disk reserve: %s has %d bytes free, under its reserve of %d; refusing new "
                "data until space is freed",
                space.path,
                space.free,
                space.reserve,
            )
        elif not space.low and space.name in self._low:
            self._low.discard(space.name)
            log.warning(
                "disk reserve: %s has %d bytes free again (reserve %d); accepting data",
                space.path,
                space.free,
                space.reserve,
            )

    def spaces(self) -> list[FolderSpace]:
        if not self._spaces or time.monotonic() - self._checked >= self.interval:
            return self.measure()
        return self._spaces

    def low(self) -> FolderSpace | None:
        """The first folder under its reserve, or None (also when the check is off)."""
        if not self.enabled:
            return None
        for space in self.spaces():
            if space.low:
                return space
        return None
