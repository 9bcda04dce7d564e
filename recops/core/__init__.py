"""The ground floor: run records, the audit chain, the lake and event logs, atomic I/O, processes.

Every stage stands on it; it imports nothing above it (``tests/test_structure.py`` holds the
order): only the declarations beside it (``recops.config``, ``errors``, ``schema``, ``paths``,
``environment``) and libraries.
"""
