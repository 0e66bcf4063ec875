"""Layer 5, the book's own plumbing: which recorded runs exist (for the prose), diagrams, the figure style and
the chapter quizzes. May import every other layer but its sibling ``exercises``; nothing imports it."""
