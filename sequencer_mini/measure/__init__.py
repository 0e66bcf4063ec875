"""Layer 2, what a model costs: one multiply-accumulate counter, throughput and peak memory.
Imports the models (and core), never training or analysis."""
