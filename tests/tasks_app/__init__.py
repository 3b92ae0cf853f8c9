"""The app of ``tests/tasks_settings.py``: its ``listeners`` module is imported at start-up."""
