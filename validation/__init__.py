"""Data validation: Great Expectations suites as code, the gate to the lake, and quarantine."""
