"""Data sources: MovieLens loaders and the synthetic generator."""
