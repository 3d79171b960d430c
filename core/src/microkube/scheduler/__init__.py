"""The scheduler: a queue of pending pods, the scheduling framework and its built-in plugins."""
