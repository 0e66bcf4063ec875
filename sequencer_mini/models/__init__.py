"""Layer 1, the models (chapters 1-5): the LSTM, the BiLSTM2D layer, the blocks, Sequencer2D and its presets,
and the small CNN and ViT it is raced against. Imports only :mod:`sequencer_mini.core`."""
