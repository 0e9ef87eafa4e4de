"""HTTP routes of the Tinker REST protocol, one module per area."""
