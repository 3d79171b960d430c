"""CRI (package ``runtime``)."""
