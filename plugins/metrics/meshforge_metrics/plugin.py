"""Entry point of meshforge-metrics (components arrive with issue 3)."""
