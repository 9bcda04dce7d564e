"""recops serving."""
