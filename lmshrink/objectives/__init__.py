"""Built-in objectives: how a compression decision becomes an optimization problem."""
