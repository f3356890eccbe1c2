"""meshforge-metrics: the previewer and quality-scorer plugins every result goes through."""
