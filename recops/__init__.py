"""recops: the core (config, schema, data, lake, models, training, evaluation, privacy, registry, gate, audit)."""

__version__ = "0.1.0"
