"""Training: models, sequences and splits, the training loop, evaluation, metrics, privacy."""
