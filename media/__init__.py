"""The media app: the storage and VOD workflows, their steps, and everything they run.

- ``storage``: each client's storage area (``local`` or ``S3``) and the per-job work directory.
- ``params``: the documented parameters, their defaults, templates and validation.
- ``validation``: the submission hook the workflow registry runs for the media workflows.
- ``hls``: reading HLS playlists, and fetching HLS/MP4 sources through the outbound guard or from storage.
- ``ffmpeg``: finds the binary and runs it with progress, heartbeat and prompt termination.
- ``probe``: duration, size and streams of a media file, from ffmpeg's own description of its input.
- ``commands``: the ffmpeg argument lists (shared with ``bench/vodstream.py``).
- ``steps/``: the steps (``vod``: the VOD workflows; ``files``: drmswitch, voddelete, asset_delete).
- ``definitions``: the common definitions of these workflows, registered at start-up (``apps``).
"""
