"""Media work for the VOD workflows (issue 8): ffmpeg as a child process, storage, probing, parameters.

- ``ffmpeg``: finds the binary and runs it with progress, heartbeat and prompt termination.
- ``storage``: ``local`` and ``S3`` source/destination storages and the per-job work directory.
- ``probe``: duration, size and streams of a media file, from ffmpeg's own description of its input.
- ``params``: the documented parameters, their defaults and their validation at submission.
- ``hls``: reading HLS playlists, and fetching HLS/MP4 sources through the outbound guard or from a storage.
- ``commands``: the ffmpeg argument lists (shared with ``bench/vodstream.py``).

The steps themselves are in ``jobs/workflows/steps/media.py``; the workflows in
``jobs/workflows/media_definitions.py``.
"""
