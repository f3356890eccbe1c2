"""meshforge-service: the REST API (Litestar), GPU workers (Dramatiq) and Redis job store around meshforge."""
