"""Compositions: a room's recordings mixed offline by the live mix's own core (issue 23).

``spec`` (sans-I/O: which recordings, which stretches of time), ``engine`` (the mix, in a
worker process), ``workers`` (the bounded pool of worker processes the server awaits).
"""
