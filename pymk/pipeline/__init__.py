"""Offline pipeline: named stages that turn an edge list into a self-describing model directory."""
