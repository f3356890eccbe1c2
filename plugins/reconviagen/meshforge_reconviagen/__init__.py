"""meshforge-reconviagen: a meshforge reconstructor plugin (registered through the meshforge.plugins entry point)."""
