"""LL-HLS building blocks with no dependency on the rest of the package (issue 14).

``playlist``: the media playlist model with parts (sans-I/O); ``blocking``: the
blocking-reload rules (sans-I/O); ``tspart``: self-contained MPEG-TS parts muxed in
memory with continuity kept across parts; ``origin``: an aiohttp origin serving any HLS
directory with blocking reload.  Written while the layout refactor was in flight;
meant to settle in ``outputs/playlist.py`` and ``serve/`` once the HLS output uses them.
"""
