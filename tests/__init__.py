"""Test suite for channels-events."""
