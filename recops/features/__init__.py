"""Features: the Parquet sources Feast reads, the Feast store itself, item text vectors."""
