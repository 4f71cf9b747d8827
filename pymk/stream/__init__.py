"""Streaming updates: an edge-event log, staleness tracking and embedding refresh as friendships arrive."""
