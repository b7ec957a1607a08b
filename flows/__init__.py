"""Prefect flows: the only package that imports Prefect. Stages know nothing of it."""
