"""recops validation."""
