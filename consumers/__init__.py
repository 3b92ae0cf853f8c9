"""Concrete consumers served by asgi.py."""
