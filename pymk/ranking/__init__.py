"""Stage 2: rankers that order Stage-1 candidates. `make_ranker(config)` builds the configured one."""

from pymk.ranking.base import RankedBatch, Ranker
from pymk.ranking.heuristic import RANKERS, HeuristicRanker, make_ranker

__all__ = ["RANKERS", "HeuristicRanker", "RankedBatch", "Ranker", "make_ranker"]
