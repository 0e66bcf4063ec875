"""Layer 2, the models meet the outside world: timm's registry and the authors' pretrained weights.
Imports the models (and core), never training or analysis."""
