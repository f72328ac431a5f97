"""The embedded room server (``mixer-ext room-server``), a product of its own.

Rooms for small installations and tests: ``rooms`` (the one owner of rooms, participants,
tracks and admission, sans-I/O), ``app`` (aiohttp routes: signaling, REST, the speaker
page), ``peer`` (what the server and its front-ends know of each other), ``names``,
``protocol`` (the project's signaling messages, sans-I/O), ``tokens``, ``limits``,
``forward`` (media between participants) and ``twilio`` (what twilio-video.js speaks,
Twilio tokens, the Video REST subset).  The mixer reaches it only through ``mixer_ext.connectors``.
"""
