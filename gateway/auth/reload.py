"""A running gateway taking a changed clients file without restart (DESIGN §11): every process watches the file
(its size, modification time and inode, looked at twice a second; its content's hash when they change, or while
the modification is under two seconds old) and reads it again on ``SIGHUP``. A file the gateway would refuse at
start-up (bad TOML, a wrong key, an unknown platform) is refused here too: the registrations already in force stay,
and the log says why — the file and the reason, never a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from pathlib import Path

import structlog

from gateway.auth.clients import AuthConfigError, ClientRegistry, load_clients

log = structlog.get_logger("gateway.auth")
#: Seconds between two looks at the clients file.
POLL_INTERVAL = 0.5
#: For this long after its modification time, the file's content is compared at each look, not only its stamp.
RACY_NS = 2_000_000_000

_Stamp = tuple[int, int, int] | None  # (inode, size, mtime in ns); None: the file is missing


def _stamp(path: Path) -> _Stamp:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_ino, status.st_size, status.st_mtime_ns


def _racy(stamp: _Stamp) -> bool:
    """The file was modified so recently that another change of the same size may share its modification time
    (file times advance by the kernel's clock tick, milliseconds): only its content can tell (git's "racily clean")."""
    return stamp is not None and time.time_ns() - stamp[2] < RACY_NS


def _digest(path: Path) -> bytes | None:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None


class ClientsReloader:
    """Keeps ``registry`` in step with the file at ``path``; ``platforms``: the routing file's platform keys."""

    def __init__(
        self, path: Path, platforms: frozenset[str], registry: ClientRegistry, interval: float = POLL_INTERVAL
    ) -> None:
        self.path = path
        self.platforms = platforms
        self.registry = registry
        self.interval = interval
        self._stamp = _stamp(path)
        self._digest = _digest(path)  # of the content the registry was built from (or last refused)

    def reload(self, why: str = "signal") -> bool:
        """Reads the file again now; True when its registrations are now in force."""
        self._stamp, self._digest = _stamp(self.path), _digest(self.path)
        try:
            loaded = load_clients(self.path, self.platforms)
        except AuthConfigError as exc:
            log.error(
                "clients_reload_refused",
                file=str(self.path),
                trigger=why,
                reason=str(exc),
                detail="the registrations already in force are kept",
            )
            return False
        self.registry.take(loaded)
        log.info("clients_reloaded", file=str(self.path), trigger=why, clients=len(loaded.clients))
        return True

    def check(self) -> bool:
        """Reloads when the file changed since last read; True when it did."""
        stamp = _stamp(self.path)
        if stamp == self._stamp and not _racy(stamp):
            return False
        digest = _digest(self.path)
        if digest is not None and digest == self._digest:
            self._stamp = stamp  # touched, or replaced by the same content: nothing to read
            return False
        return self.reload("file changed")

    async def watch(self, stop: asyncio.Event) -> None:
        """Looks at the file every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
            if not stop.is_set():
                self.check()
