"""The extension worker (``mixer-ext run``): one run of the mixer for one room.

``runner.Worker`` starts the outputs and the clock, joins the room, pumps room events into
the roster and shuts down in order; ``status`` reports its lifecycle to a webhook.
"""
