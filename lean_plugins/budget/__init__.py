"""Layer package; see README.md. Keep this import light (no torch at import time)."""
