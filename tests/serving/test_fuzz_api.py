"""The HTTP API fuzzed against its own OpenAPI spec (schemathesis, a bounded example count): no server
error and no response outside the spec, on every endpoint, without a key and with an admin key."""

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import ignored_auth, positive_data_acceptance
from typer.testing import CliRunner

from pymk.cli import app as cli
from pymk.graph.edges import EdgeList
from pymk.pipeline.build import build_from_edges
from pymk.pipeline.model import Model
from pymk.serving.app import create_app
from pymk.serving.service import Service
from pymk.serving.settings import ServeSettings
from tests.helpers import graph_from_pairs

EXAMPLES = int(os.environ.get("PYMK_FUZZ_EXAMPLES", "30"))  # per endpoint; a longer run: docs/BENCHMARKS.md


@pytest.fixture(scope="module", params=["no key", "admin key"])
def api(request, tmp_path_factory):
    g = graph_from_pairs([(0, 1), (1, 2), (0, 3), (3, 2), (3, 4), (5, 6), (4, 6), (2, 5)], 7)
    lo, hi = g.edge_pairs()
    d = build_from_edges(EdgeList(g.ids, lo, hi), tmp_path_factory.mktemp("fuzz") / "model", log=lambda s: None)
    headers = {}
    if request.param == "admin key":
        res = CliRunner().invoke(cli, ["keys", "create", "--model", str(d), "--scopes", "admin"])
        headers = {"Authorization": f"Bearer {res.stdout.strip().splitlines()[-1]}"}
    svc = Service(Model.load(d), ServeSettings(model=str(d), stream_log=str(d / "events.log")))
    # without keys the service is open by design (served on loopback only): "invalid credentials are
    # refused" is checked in the run with a key
    excluded = [positive_data_acceptance] + ([] if headers else [ignored_auth])
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(svc)), headers, excluded


def test_api_conforms_to_its_spec(api):
    # the operations one by one with schemathesis' strategies (its pytest plugin does not load on this
    # pytest); each is a hypothesis test of its own
    schema, headers, excluded = api
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) >= 9  # every endpoint of the API is in the spec
    for op in ops:
        @given(case=op.as_strategy())
        @settings(max_examples=EXAMPLES, suppress_health_check=list(HealthCheck), database=None)
        def run(case):
            # always excluded: "schema-valid data must be accepted": the API refuses some well-formed requests
            # on purpose (a user acting on itself: 422 in the documented validation-error shape)
            case.call_and_validate(headers=headers, excluded_checks=excluded)

        run()
