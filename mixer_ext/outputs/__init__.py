"""Stage 4 of the pipeline: where the encoded mix goes.

Each output (``hls``, ``recording``, ``rtmp``) runs on its own thread behind a bounded queue
(``base.Output``), so a failing server or a slow disk never stalls the mixer or another
output.  ``carriers`` builds and parses the timed-metadata carriers (ID3 for TS, AMF0
``onTextData`` for FLV); ``hls`` writes its stream with ``mixer_ext/hls/`` (playlist
model, part writer).
"""
