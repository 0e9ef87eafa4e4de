"""The documented MinT types (placeholder until the types land)."""
