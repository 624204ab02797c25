"""Built-in architecture adapters, registered through the same hook a third-party adapter uses."""
