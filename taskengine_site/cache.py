"""The Redis cache backend, with one reused client and a single-round-trip window counter.

Django's ``RedisCacheClient.get_client`` builds a new ``redis.Redis`` object for every cache call
(≈ 0.2 ms of CPU here: it fills a table of ~150 response callbacks each time), and its ``incr`` checks
``EXISTS`` before ``INCR``; the per-client throttle made three such calls per API request. This backend
keeps one client per connection pool (redis-py clients are thread-safe; the pool is Django's own, one per
cache instance, and Django gives each thread its own cache instance), and :meth:`RedisCache.incr_window`
counts a request in one round trip (a Lua script: cheaper for the client than a MULTI/EXEC pipeline).

The two commands every ``POST /job`` sends (the rate limit's window count, the dispatch flag's
``add``) go through :meth:`RedisCache._quick`: packed here and written on a connection of the cache
instance's own, without redis-py's per-command machinery (its client's retry wrapper and metrics, the
pool's lock, bookkeeping and the poll of the connection before each use), which cost about 80 µs of CPU
a command, several times the command itself (bench/README.md, issue 16). Any failure there (an error
reply, a broken or timed-out connection) closes that connection and runs the command again through
redis-py's client, which reconnects and retries as it always did: the outcome is redis-py's. After
such a failure the quick path rests for a second, so an unreachable Redis costs a request no more
attempts than before.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, cast

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient
from redis import ConnectionPool, Redis
from redis.commands.core import Script
from redis.exceptions import ResponseError


class ReusingRedisCacheClient(RedisCacheClient):
    """Django's client, returning the same ``redis.Redis`` for a pool instead of a new one per call."""

    # Django's own attributes, which django-stubs leaves out.
    _client: type[Redis]
    _get_connection_pool: Callable[[bool], ConnectionPool]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        pool = self._get_connection_pool(write)  # Django's choice of server (a read may pick a replica)
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients[id(pool)] = self._client(connection_pool=pool)
        return client


class RedisCache(DjangoRedisCache):
    """``django.core.cache.backends.redis.RedisCache`` with :class:`ReusingRedisCacheClient`."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = ReusingRedisCacheClient
        # (pid, connection) for _quick; Django gives each thread its own cache instance, so no two
        # threads share it, and a forked child makes its own.
        self._line: tuple[int, Any] | None = None
        # After a failure the quick path rests until then (time.monotonic()): while Redis is restarting
        # or unreachable, a command costs what redis-py's own attempts cost, not one more connect first.
        self._rest_until = 0.0

    def _quick(self, *args: bytes | str | int) -> Any:
        """The reply to one command (bytes, str or int arguments, str encoded as UTF-8, the client's
        default), sent on this instance's own connection to the write server; raises on any failure,
        after closing that connection (the caller then runs the command through redis-py), and for
        ``QUICK_REST_SECONDS`` after a failure that was not an error reply."""
        if self._rest_until and time.monotonic() < self._rest_until:
            raise QuickPathResting
        line = self._line
        if line is None or line[0] != _pid:
            pool = cast(ReusingRedisCacheClient, self._cache)._get_connection_pool(True)
            # A connection of the pool's class and settings (server, database, password, TLS, timeouts,
            # protocol), not taken from the pool: it is used by this instance alone.
            line = self._line = (_pid, pool.connection_class(**pool.connection_kwargs))
        connection = line[1]
        try:
            if connection._sock is None:
                connection.connect()  # redis-py's handshake (HELLO, AUTH, SELECT) with its timeouts
                _kernel_timeouts(connection._sock, connection.socket_timeout)
            connection.send_packed_command([_pack(args)], check_health=False)
            return connection.read_response()
        except ResponseError:
            raise  # a whole reply was read: the connection is in step
        except BaseException:
            connection.disconnect()
            self._rest_until = time.monotonic() + QUICK_REST_SECONDS
            raise

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        """Django's ``add``; an integer with an expiry (the dispatch flag) is one ``SET … EX … NX`` sent
        by :meth:`_quick`, the command Django's client sends for it (its serializer keeps integers as
        they are), and redis-py's if that fails."""
        seconds = self.get_backend_timeout(timeout)
        if type(value) is int and seconds:  # not a bool: Django pickles those
            made = self.make_and_validate_key(key, version=version)
            try:
                return self._quick(b"SET", made, value, b"EX", int(seconds), b"NX") is not None
            except Exception:  # noqa: S110 (redis-py's client below retries and raises as before)
                pass
        return bool(super().add(key, value, timeout, version))

    def incr_window(self, key: str, timeout: int) -> int:
        """Count one more hit on ``key``, created at 0 with ``timeout`` seconds to live when missing.

        One Lua script (one round trip, atomic): the count never outlives its window and never starts
        without an expiry. Same key and value as ``add(key, 0, timeout)`` + ``incr(key)``. Sent by
        :meth:`_quick` as ``EVALSHA``; redis-py's ``Script`` (which loads the script when the server
        answers NOSCRIPT) if that fails.
        """
        key = self.make_and_validate_key(key)
        try:
            return int(self._quick(b"EVALSHA", _INCR_WINDOW.sha, b"1", key, timeout))
        except Exception:  # noqa: S110 (redis-py's client below retries and raises as before)
            pass
        client = self._cache.get_client(key, write=True)
        return int(_INCR_WINDOW(keys=[key], args=[timeout], client=client))

    def incr_window_reading(self, key: str, timeout: int, read: str) -> tuple[int, bytes | None]:
        """:meth:`incr_window`, and the stored bytes of the cache key ``read`` (None when missing), in the
        same round trip: the rate limit's count and the API keys token (``clients.keycache``)."""
        key, other = self.make_and_validate_key(key), self.make_and_validate_key(read)
        try:
            count, value = self._quick(b"EVALSHA", _INCR_WINDOW_READING.sha, b"2", key, other, timeout)
            return int(count), value
        except Exception:  # noqa: S110 (redis-py's client below retries and raises as before)
            pass
        client = self._cache.get_client(key, write=True)
        count, value = _INCR_WINDOW_READING(keys=[key, other], args=[timeout], client=client)
        return int(count), value

    def get_raw(self, key: str) -> bytes | None:
        """The stored bytes of ``key`` (an integer's digits as Django's serializer writes them), None when
        missing: one ``GET`` by :meth:`_quick`, redis-py's if that fails."""
        made = self.make_and_validate_key(key)
        try:
            return cast(bytes | None, self._quick(b"GET", made))
        except Exception:  # noqa: S110 (redis-py's client below retries and raises as before)
            pass
        return cast(bytes | None, self._cache.get_client(made).get(made))


def stored_bytes(backend: Any, key: str) -> Any:
    """The stored bytes of ``key`` with this project's backend (:meth:`RedisCache.get_raw`, one quick
    command), its value with any other backend."""
    get_raw = getattr(backend, "get_raw", None)
    return get_raw(key) if get_raw is not None else backend.get(key)


QUICK_REST_SECONDS = 1.0


class QuickPathResting(Exception):
    """The quick path failed less than ``QUICK_REST_SECONDS`` ago: the command goes through redis-py."""


def _kernel_timeouts(sock: Any, seconds: float | None) -> None:
    """Let the kernel bound a plain socket's reads and writes (``SO_RCVTIMEO``/``SO_SNDTIMEO``) and put
    it in blocking mode: with a timeout of its own, Python polls the socket before every send and
    every receive, two more system calls a command, each letting the GIL go to another thread. A
    read or write that runs out of time fails with ``EAGAIN`` (a ``ConnectionError`` from redis-py's
    reader, like its own timeout), and the command is run again through redis-py. A TLS socket keeps
    Python's timeouts."""
    if seconds is None or type(sock) is not socket.socket:
        return
    whole = int(seconds)
    timeval = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
    sock.settimeout(None)


# This process's id, renewed in a forked child, whose cache instances then open connections of their
# own (os.getpid() is a system call).
_pid = os.getpid()


def _renew_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_renew_pid)


def _pack(args: tuple[bytes | str | int, ...]) -> bytes:
    """``args`` as one RESP command (an array of bulk strings), as redis-py's packer writes it."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


# EVALSHA, loaded on first use (and again after a SCRIPT FLUSH or on another server).
_INCR_WINDOW = Script(
    None,  # type: ignore[arg-type]  # the client is given on every call
    b"redis.call('SET', KEYS[1], 0, 'EX', ARGV[1], 'NX') return redis.call('INCR', KEYS[1])",
)
_INCR_WINDOW_READING = Script(
    None,  # type: ignore[arg-type]  # the client is given on every call
    b"redis.call('SET', KEYS[1], 0, 'EX', ARGV[1], 'NX')"
    b" return {redis.call('INCR', KEYS[1]), redis.call('GET', KEYS[2])}",
)
