"""Layer 5, the book's own plumbing: which recorded runs exist (for the prose), diagrams and the figure style.
May import every other layer; nothing imports it."""
