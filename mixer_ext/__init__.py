"""mixer-ext: a self-hosted live audio mixer extension.

A headless bot joins a WebRTC room, mixes every participant's audio, encodes
the mix once and streams it to HLS, RTMP/RTMPS and recordings, with a timed
metadata payload of per-participant volume levels every 500 ms.
"""

__version__ = "0.1.0"

#: The identity the bot joins a room under unless the context says otherwise.
DEFAULT_IDENTITY = "audio-mixer-v1"
