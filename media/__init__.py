"""The media app: the storage and VOD workflows, their steps, and everything they run.

- ``storage``: each client's storage area (``local`` or ``S3``) and the per-job work directory.
- ``params``: the documented parameters, their defaults, templates and validation.
- ``validation``: the submission hook the workflow registry runs for the media workflows.
- ``hls``: reading HLS playlists, and fetching HLS/MP4 sources through the outbound guard or from storage.
- ``ffmpeg``: finds the binary and runs it with progress, heartbeat and prompt termination.
- ``probe``: duration, size and streams of a media file, from ffmpeg's own description of its input.
- ``sandbox``: how every ffmpeg is confined (scrubbed environment, the work dir, Landlock where the
  host enforces it), and the worker's start line saying which; ``confine``: the wrapper that applies
  the sandbox in the child and then becomes ffmpeg.
- ``commands``: the ffmpeg argument lists (shared with ``bench/vodstream.py``).
- ``steps/``: the steps (``vod``: the VOD workflows; ``files``: drmswitch, voddelete, asset_delete).
- ``definitions``: the common definitions of these workflows, registered at start-up (``apps``).
"""
