"""Orchestration: Prefect flows and Ray actors. The only package that imports them."""
