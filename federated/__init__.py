"""recops federated."""
