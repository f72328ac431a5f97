"""The control plane: the Media v1 REST resources, their store and their launchers.

Split by job, in import order (no module imports one below it):

- ``resources``: the wire format and the state machines (``processor_step``,
  ``streamer_step``, ``recording_step``) and the create rules (sans-I/O);
- ``timedmeta``: an app's timed metadata on its way to a worker (sans-I/O);
- ``store``: the only module that speaks SQL;
- ``launcher`` (local child processes) and ``kube`` (Kubernetes Jobs): the launchers;
- ``callbacks``: status callback delivery from the store's outbox;
- ``plane``: ``ControlPlane``, the effects interpreter and the watcher;
- ``http``: the aiohttp plumbing the routes share (auth, errors, forms);
- ``playback``: the playback gate (grant, session token, playlist rewrite, proxy);
- ``routes``: the aiohttp handlers, which translate requests into calls of the above;
- ``cli``: ``mixer-ext api``.
"""
