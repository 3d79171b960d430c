"""Controllers and the reconcile runtime they run on (see runtime.py)."""
