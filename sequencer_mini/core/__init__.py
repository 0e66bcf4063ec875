"""Layer 0, under everything: the budget switch, results files with provenance, safe file writes.

Nothing here knows about models or training; every other layer may import it.
"""
