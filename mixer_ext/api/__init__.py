"""The control plane: the Media v1 REST resources, their store and their launchers.

- ``resources``: the wire format and the state machines (sans-I/O);
- ``store``: the only module that speaks SQL;
- ``app``: the aiohttp handlers, which translate requests into calls of the two above.
"""
