"""The stream's name for the living graph: `LiveAdjacency` is `pymk.graph.live.LiveGraph` (snapshot +
delta; `add`, `rows`, `ball`, `degree`, `to_graph`), the one structure the refreshers and Stage 1 share."""

from pymk.graph.live import LiveGraph as LiveAdjacency

__all__ = ["LiveAdjacency"]
