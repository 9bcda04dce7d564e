"""recops core: config, schema, data, lake, models, training, privacy, registry, gate, audit."""

__version__ = "0.1.0"
