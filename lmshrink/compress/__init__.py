"""Model surgery that plain transformers cannot express, and lmshrink's own save format."""
