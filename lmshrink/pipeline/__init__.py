"""End-to-end flows: model + text → problem → solution → compressed model → report."""
