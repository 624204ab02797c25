"""Built-in solver backends, one module each. Optional backends import their libraries lazily."""
