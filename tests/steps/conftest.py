from tests.callbacks.support import allow_loopback, committed, queues, receiver  # noqa: F401
