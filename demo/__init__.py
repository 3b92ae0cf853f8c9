"""Demo Django project for channels-events."""
