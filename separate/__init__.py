"""Separate stage: split each input into a vocals track and a background track.

Engines (one module each) arrive with the separate stage: ``spleeter`` (Deezer Spleeter 2stems),
``repet`` (a weight-free REPET-SIM baseline).
"""
