"""Observes the test suite's ``Order`` model in namespace ``shop`` for the end-to-end tests."""
