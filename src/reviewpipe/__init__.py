"""reviewpipe: a local-first, reproducible review-sentiment ML pipeline."""

__version__ = "0.1.0"

# Sentiment labels in model-class order: class index i <-> SENTIMENTS[i].
SENTIMENTS: tuple[int, int, int] = (-1, 0, 1)
