"""Schemathesis against our own OpenAPI document, on the test-driver backend: no 5xx, and every
answer (error bodies included) conforms to the document."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, find, settings
from schemathesis.generation import GenerationMode

from src.api.openapi import DOCUMENT
from src.api.schemas import SCHEMAS
from src.api.validation import validator
from src.app import App, create_app
from src.config import Config
from tests.conftest import make_qcow2
from tests.support import Client, LiveServer, host_xml

EXAMPLES_PER_OPERATION = 100  # bounded: the whole run takes about a minute
# A fresh seed every run, on a smaller budget (IAAS_FUZZ_EXAMPLES raises it for a longer hunt).
RANDOM_EXAMPLES_PER_OPERATION = int(os.environ.get("IAAS_FUZZ_EXAMPLES", "20"))

# Two answers the checks do not expect by default, both by design and documented: a schema-valid
# body refused on meaning (an image file that does not exist, a disk smaller than its image: 400),
# a body over 64 KiB refused before it is read (413), and an Idempotency-Key the fuzzer reuses
# with another body (422). Every other expectation stands.
CONFIG = schemathesis.config.SchemathesisConfig.from_dict({"checks": {
    "positive_data_acceptance": {"expected-statuses": ["2XX", "3XX", 400, 401, 403, 404, 409,
                                                       422]},
    "negative_data_rejection": {"expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413,
                                                      415, 422]},
}})
# createHost connects to the URI it is given: a fuzzer's URIs would send traffic to any
# address (qemu+ssh://, qemu+tls://), so that operation is tested by hand (test_hosts.py).
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG).exclude(operation_id="createHost")
# createImage imports from the URL it is given: resolving a fuzzer's host name would already send
# a DNS query off this machine. A URL the schema accepts is replaced by one on 127.0.0.1, which
# is refused (url_not_allowed) without a lookup or a connection; a URL that breaks the schema is
# kept (it is refused before anything is resolved).
SAFE_URL = "http://127.0.0.1:9/image.qcow2"
URL_SCHEMA = SCHEMAS["ImageCreate"]["properties"]["url"]
# The token goes through Schemathesis's own auth, which leaves it out of a case whose negation
# removed Authorization. Passed as headers= to call_and_validate it went with every case: a case
# that negated both the token and the query, whose query part was lost on the wire (an extra
# parameter generated as an empty list is not sent), reached the API as a valid request, and the
# 200 it rightly got was reported as invalid data accepted. Cases are made before the server
# exists, so auth writes a placeholder that `ready` swaps for the server's token.
TOKEN_PLACEHOLDER = "Bearer <the fuzzed server's token>"


@schema.auth(refresh_interval=None)  # no cache, no retry on 401: a 401 is an answer under test
class ServerToken:
    def get(self, _case: schemathesis.Case, _context: schemathesis.AuthContext) -> str:
        return TOKEN_PLACEHOLDER

    def set(self, case: schemathesis.Case, data: str, _context: schemathesis.AuthContext) -> None:
        case.headers["Authorization"] = data


def ready(case: schemathesis.Case, server: LiveServer) -> schemathesis.Case:
    """The case as every test here sends it: its token (where auth put one), no traffic out."""
    if (case.headers or {}).get("Authorization") == TOKEN_PLACEHOLDER:
        case.headers["Authorization"] = f"Bearer {server.token}"
    return no_network(case)


def no_network(case: schemathesis.Case) -> schemathesis.Case:
    body = case.body
    if (case.method, case.path) == ("POST", "/v1/images") and isinstance(body, dict) \
            and validator(URL_SCHEMA).is_valid(body.get("url")):
        body["url"] = SAFE_URL
    return case


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root: Path = tmp_path_factory.mktemp("fuzz")
    (root / "host.xml").write_text(host_xml("iaas-fuzz", cpus=1024, memory_gib=4096))
    (root / "images").mkdir()
    config = Config(db_path=root / "iaas.db", libvirt_uri=f"test://{root}/host.xml",
                    domain_type="test", images_dir=root / "images",
                    instances_dir=root / "instances", network="iaas-fuzz", max_builds=4)
    app: App = create_app(config)
    make_qcow2(config.images_dir / "base.qcow2")
    Client(app).post("/v1/images", {"name": "base", "file": "base.qcow2", "format": "qcow2"})
    server = LiveServer(app)
    yield server
    server.stop()
    app.close()


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_keeps_its_contract(case: schemathesis.Case, fuzzed: LiveServer) -> None:
    ready(case, fuzzed).call_and_validate(base_url=fuzzed.url)



@schema.parametrize()
@settings(max_examples=RANDOM_EXAMPLES_PER_OPERATION, deadline=None, derandomize=False,
          database=None, suppress_health_check=list(HealthCheck))
def test_api_keeps_its_contract_on_a_random_seed(case: schemathesis.Case,
                                                 fuzzed: LiveServer) -> None:
    """Beside the repeatable run: new inputs each time (Hypothesis prints how to reproduce)."""
    ready(case, fuzzed).call_and_validate(base_url=fuzzed.url)


def _drops_the_token_among_others(case: schemathesis.Case) -> bool:
    assert case.meta is not None
    mutations = getattr(case.meta.phase.data, "mutations", ())
    return len({mutation.parameter_location for mutation in mutations}) > 1 and any(
        mutation.parameter == "Authorization" and "required" in mutation.keywords
        for mutation in mutations)


def test_a_case_that_drops_the_token_goes_without_it(fuzzed: LiveServer) -> None:
    """The false report on GET /v1/gpus: a case negating the query and the token was sent with
    the token, and its query negation was lost on the wire; such a case now goes without one."""
    strategy = schema["/v1/gpus"]["GET"].as_strategy(generation_mode=GenerationMode.NEGATIVE)
    case = find(strategy, _drops_the_token_among_others,
                settings=settings(database=None, max_examples=5000, phases=[Phase.generate]))
    response = ready(case, fuzzed).call(base_url=fuzzed.url)
    assert "Authorization" not in response.request.headers
    assert response.status_code == 401


def test_a_valid_case_goes_with_the_token(fuzzed: LiveServer) -> None:
    """Else every case would stop at 401, which the positive check accepts."""
    case = find(schema["/v1/gpus"]["GET"].as_strategy(generation_mode=GenerationMode.POSITIVE),
                lambda _case: True, settings=settings(database=None, phases=[Phase.generate]))
    assert ready(case, fuzzed).call(base_url=fuzzed.url).status_code == 200
