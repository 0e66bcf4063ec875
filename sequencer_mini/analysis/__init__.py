"""Layer 4, looking at trained models (chapters 6, 9, 10): the one loader of recorded runs, the race, ablations,
robustness, effective receptive fields and their widgets. Imports training, measure, interop, models, core."""
