"""Talking to Redis on the hot path: a per-thread connection and hand-packed commands.

Going through redis-py's pool and general encoder costs about as much as the round trip;
serving threads are long-lived, so each keeps one connection for the caps script.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import redis
from redis.connection import AbstractConnection
from redis.exceptions import NoScriptError

from backbeat.serving.redis_scripts import CAPS_LUA


class HotPath:
    """Mixin: ``_run_caps`` over this thread's own connection."""

    _fast: redis.Redis
    _caps_sha: bytes
    _local: threading.local
    _generation: int
    _hot_connections: weakref.WeakSet[AbstractConnection]

    def _hot_connection(self) -> Any:  # an AbstractConnection, whose methods are unannotated
        """This thread's own connection for the caps script.

        Going through the pool costs about as much as the round trip itself (checkout,
        liveness peek, release); serving threads are long-lived, so each keeps one.
        """
        local = self._local
        connection: Any = getattr(local, "connection", None)
        if connection is not None and local.generation == self._generation:
            return connection
        if connection is not None:
            connection.disconnect()
        pool = self._fast.connection_pool
        connection = pool.connection_class(**pool.connection_kwargs)
        local.connection, local.generation = connection, self._generation
        self._hot_connections.add(connection)
        return connection

    def _run_caps(self, keys: list[str], args: list[int]) -> int:
        connection = self._hot_connection()
        parts = [str(len(keys)).encode(), *(key.encode() for key in keys)]
        parts += [str(arg).encode() for arg in args]
        try:
            try:
                connection.send_packed_command([_resp([b"EVALSHA", self._caps_sha, *parts])])
                return int(connection.read_response())
            except NoScriptError:  # a restarted Redis has forgotten the script
                connection.send_command("SCRIPT", "LOAD", CAPS_LUA)
                self._caps_sha = connection.read_response()
                connection.send_packed_command([_resp([b"EVALSHA", self._caps_sha, *parts])])
                return int(connection.read_response())
        except (redis.ConnectionError, redis.TimeoutError):
            connection.disconnect()  # a reply may still be on its way: never reuse the socket
            raise


def _resp(parts: list[bytes]) -> bytes:
    """One command in the Redis protocol; half the cost of redis-py's general encoder."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out += (b"$%d\r\n" % len(part), part, b"\r\n")
    return b"".join(out)
