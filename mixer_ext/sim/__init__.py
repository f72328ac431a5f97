"""Synthetic participants and the demo: tone/WAV tracks, ``talker``, the Janus publisher and
``demo`` (room server + talkers + worker + player on one machine).  Not used by the mixer."""
