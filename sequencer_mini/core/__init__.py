"""Layer 0, under everything: the budget switch, results files with provenance, safe file writes, data-set facts
and the environment switches. Nothing here knows about models or training; every other layer may import it."""
