"""The HLS format and its origin: plain HLS and LL-HLS, with no dependency on the pipeline.

- ``playlist``: the media playlist model, segments and parts (sans-I/O);
- ``tspart``: self-contained MPEG-TS segments and parts muxed in memory, continuity kept;
- ``writer``: ``PartedStreamWriter``, which writes segments, parts and the playlist
  (atomically) for ``outputs/hls.py``, and resumes a playlist an earlier run left open;
- ``blocking``: the blocking-reload rules (``_HLS_msn``/``_HLS_part``: ready, wait, reject;
  sans-I/O);
- ``origin``: ``HlsOrigin``, an aiohttp origin serving any HLS directory with blocking
  reload, used by the worker's endpoint (``serve/http.py``) and the API (``api/playback.py``).
"""
