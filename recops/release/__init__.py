"""Release: the promotion gate and the model registry (BentoML model store)."""
