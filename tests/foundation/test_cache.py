"""The project's Redis cache backend (taskengine_site.cache): Django's, with a reused client and a
one-round-trip window counter for the throttle."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.core.cache import cache, caches

from taskengine_site.cache import QuickPathResting, RedisCache


def test_the_configured_cache_is_the_project_backend() -> None:
    assert isinstance(caches["default"], RedisCache)


def test_one_client_is_reused_for_every_call() -> None:
    backend = caches["default"]
    assert isinstance(backend, RedisCache)
    client = backend._cache
    assert client.get_client("a", write=True) is client.get_client("b", write=True)
    assert client.get_client("a") is client.get_client("a", write=True)  # one server: one pool


def test_incr_window_counts_and_expires_like_add_and_incr() -> None:
    key = f"window-{uuid.uuid4().hex}"

    assert [cache.incr_window(key, 61) for _ in range(3)] == [1, 2, 3]  # type: ignore[attr-defined]
    # The same key and value the generic path (cache.add(key, 0) + cache.incr(key)) would have made.
    assert cache.get(key) == 3
    assert cache.incr(key) == 4
    redis_key = cache.make_key(key)
    ttl: Any = cache._cache.get_client(redis_key).ttl(redis_key)  # type: ignore[attr-defined]
    assert 0 < ttl <= 61
    cache.delete(key)


def test_incr_window_never_extends_a_running_window() -> None:
    key = f"window-{uuid.uuid4().hex}"
    cache.incr_window(key, 5)  # type: ignore[attr-defined]
    cache.incr_window(key, 3600)  # type: ignore[attr-defined]
    redis_key = cache.make_key(key)
    assert cache._cache.get_client(redis_key).ttl(redis_key) <= 5  # type: ignore[attr-defined]
    cache.delete(key)


def test_add_of_an_integer_writes_what_djangos_add_writes() -> None:
    from django.core.cache.backends.redis import RedisCache as DjangoRedisCache

    quick, plain = f"add-{uuid.uuid4().hex}", f"add-{uuid.uuid4().hex}"
    assert cache.add(quick, 1, timeout=10) is True
    assert DjangoRedisCache.add(cache, plain, 1, timeout=10) is True
    assert cache.add(quick, 2, timeout=10) is False  # present: not replaced
    client: Any = cache._cache.get_client(None, write=True)  # type: ignore[attr-defined]
    stored = {key: client.get(cache.make_key(key)) for key in (quick, plain)}
    assert stored[quick] == stored[plain] == b"1"
    assert 0 < client.ttl(cache.make_key(quick)) <= 10
    assert cache.get(quick) == 1
    # Values Django pickles (a bool, a string) and adds without an expiry take Django's path.
    assert cache.add(f"{quick}-bool", True, timeout=10) is True
    assert cache.get(f"{quick}-bool") is True
    assert cache.add(f"{quick}-forever", 1, timeout=None) is True
    assert client.ttl(cache.make_key(f"{quick}-forever")) == -1
    assert cache.add(f"{quick}-gone", 1, timeout=0) is True  # Django's: added and deleted at once
    assert cache.get(f"{quick}-gone") is None
    cache.delete_many([quick, plain, f"{quick}-bool", f"{quick}-forever"])


def test_a_connection_closed_by_the_server_is_replaced_and_nothing_is_lost() -> None:
    backend: Any = caches["default"]
    key = f"window-{uuid.uuid4().hex}"
    assert backend.incr_window(key, 61) == 1
    own_id = backend._quick(b"CLIENT", b"ID")  # the connection the quick commands use
    client: Any = backend._cache.get_client(None, write=True)
    assert client.client_kill_filter(_id=own_id) == 1
    # The next commands find the connection closed: each is counted once, through redis-py, and the
    # quick path rests a moment before it connects again.
    assert backend.incr_window(key, 61) == 2
    assert backend._line[1]._sock is None and backend._rest_until > 0
    assert backend.add(f"{key}-flag", 1, timeout=10) is True
    assert backend._line[1]._sock is None  # through redis-py while resting
    backend._rest_until = 0.0  # the rest is over
    assert backend.incr_window(key, 61) == 3
    assert backend._line[1]._sock is not None
    backend.delete_many([key, f"{key}-flag"])


def test_incr_window_loads_its_script_when_the_server_does_not_know_it(monkeypatch: Any) -> None:
    from redis.commands.core import Script

    from taskengine_site import cache as module

    # The same script under a text the server has never seen (no SCRIPT FLUSH on a shared server):
    # the quick EVALSHA is answered NOSCRIPT, and redis-py's Script loads it.
    text = module._INCR_WINDOW.script
    assert isinstance(text, bytes)
    unseen = Script(None, text + f" -- {uuid.uuid4().hex}".encode())  # type: ignore[arg-type]
    monkeypatch.setattr(module, "_INCR_WINDOW", unseen)
    key = f"window-{uuid.uuid4().hex}"
    assert cache.incr_window(key, 61) == 1  # type: ignore[attr-defined]
    assert cache.incr_window(key, 61) == 2  # type: ignore[attr-defined]
    cache.delete(key)


class _SilentRedis:
    """A server that answers +OK to the connection's handshake, then reads commands and never answers."""

    def __init__(self, answered: int) -> None:
        import socket
        import threading

        self.answered = answered
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open: list[Any] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.open.append(conn)
            reader = conn.makefile("rb")
            for _ in range(self.answered):
                header = reader.readline()  # *<n>
                for _ in range(int(header[1:])):
                    reader.readline()  # $<len>
                    reader.readline()  # the argument
                conn.sendall(b"+OK\r\n")

    def close(self) -> None:
        self.listener.close()
        for conn in self.open:
            conn.close()


def test_a_server_that_stops_answering_fails_the_quick_command_instead_of_hanging() -> None:

    from redis.exceptions import ConnectionError as RedisConnectionError

    # CLIENT SETINFO lib-name and lib-ver are the handshake of a RESP2 connection to database 0.
    server = _SilentRedis(answered=2)
    try:
        backend = RedisCache(
            f"redis://127.0.0.1:{server.port}/0",
            {"OPTIONS": {"socket_timeout": 0.2, "socket_connect_timeout": 0.2, "protocol": 2}},
        )
        with pytest.raises(RedisConnectionError):
            backend._quick(b"PING")
        connection = backend._line[1]  # type: ignore[index]
        assert connection._sock is None  # closed: the next command starts on a new connection
        with pytest.raises(QuickPathResting):  # after a rest: redis-py's attempts alone meanwhile
            backend._quick(b"PING")
    finally:
        server.close()


def test_the_quick_connection_is_blocking_with_the_kernel_holding_its_timeout() -> None:
    import socket
    import struct

    backend: Any = caches["default"]
    backend._quick(b"PING")
    sock = backend._line[1]._sock
    if type(sock) is not socket.socket:  # TLS keeps Python's timeouts
        return
    assert sock.gettimeout() is None
    seconds, micros = struct.unpack("ll", sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16))
    assert seconds + micros / 1e6 == backend._line[1].socket_timeout
