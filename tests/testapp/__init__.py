"""Django app with the models used by the test suite."""
