"""Requests served from many threads at once (the kernels release the GIL and keep per-thread
workspaces) answer exactly what they answer one at a time."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from pymk.pipeline.model import Model
from pymk.serving.service import Service
from pymk.serving.settings import ServeSettings
from tests.helpers import build_learned_model


def test_threads_give_the_sequential_answers(tmp_path):
    svc = Service(Model.load(build_learned_model(tmp_path / "m")), ServeSettings(cache_size=0))
    users = [int(u) for u in svc.model.graph.ids[np.random.default_rng(0).permutation(600)[:200]]]
    one_by_one = [svc.recommend(u, 20).response for u in users]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda u: svc.recommend(u, 20).response, users * 3))
    assert together == one_by_one * 3
    assert all(len(r) == 20 for r in one_by_one)
