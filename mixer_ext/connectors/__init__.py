"""Stage 1 of the pipeline: how the bot joins a room.

One interface (``base.RoomConnector``: connect, a stream of ``RoomEvent``s, disconnect) and
two implementations: the embedded room server (``embedded``, this project's own signaling)
and a Janus VideoRoom (``janus``).  Nothing above this package knows which one is in use;
``factory.make_connector`` picks it from the settings.
"""
