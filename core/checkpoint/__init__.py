"""Checkpoints: our own format (dicts of state dicts, safe to load) and official YOLOv7 ``.pt`` files."""
