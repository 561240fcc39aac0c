"""What the engine announces to whoever watches it, without knowing who does (the monitoring room)."""

from __future__ import annotations

from django.dispatch import Signal

# Sent once per worker message, after it ends, with ``processed`` (step attempts finished) and
# ``failed`` (how many of them failed). Receivers must never raise.
steps_finished = Signal()
