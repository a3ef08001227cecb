"""`biofuse serve`: the analyst API and web page (FastAPI, static files, no build step)."""
