"""Helpers of the test suite, imported as ``tests.helpers.<module>`` (never ``from conftest``)."""
