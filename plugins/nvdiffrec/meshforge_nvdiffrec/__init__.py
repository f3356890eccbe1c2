"""meshforge-nvdiffrec: a meshforge reconstructor plugin (registered through the meshforge.plugins entry point)."""
