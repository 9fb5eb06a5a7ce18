"""Fixtures shared by every tier: fresh config, database and libvirt test-driver host per test."""
from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from src.app import App, create_app
from src.config import Config
from tests.origin import Origin, full_qcow2
from tests.support import Client, LiveServer, ProdServer, host_xml

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, Playwright

AppFactory = Callable[..., App]
CHROMIUM = Path("/usr/bin/chromium")  # Debian's package: Playwright never downloads a browser
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--regenerate-golden", action="store_true",
                     help="rewrite the golden files (tests/unit/golden) from what the code "
                          "renders now, instead of comparing with them")


@pytest.fixture
def test_host(tmp_path: Path) -> Path:
    """A libvirt test-driver host of our own: every open gets a fresh, empty hypervisor."""
    path = tmp_path / "host.xml"
    path.write_text(host_xml("iaas-test"))
    return path


@pytest.fixture
def config(tmp_path: Path, test_host: Path) -> Config:
    images = tmp_path / "images"
    images.mkdir()
    return Config(db_path=tmp_path / "iaas.db", libvirt_uri=f"test://{test_host}",
                  domain_type="test", images_dir=images, instances_dir=tmp_path / "instances",
                  network="iaas-test", max_builds=4, allow_test_hosts=True)


@pytest.fixture
def make_app() -> Iterator[AppFactory]:
    apps: list[App] = []

    def factory(config: Config, **deps: Any) -> App:
        app = create_app(config, **deps)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.close()


@pytest.fixture
def app(make_app: AppFactory, config: Config) -> App:
    return make_app(config)


@pytest.fixture
def client(app: App) -> Client:
    return Client(app)


def make_qcow2(path: Path, size: str = "64M") -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path


@pytest.fixture
def base_image(client: Client, config: Config) -> dict[str, Any]:
    make_qcow2(config.images_dir / "base.qcow2")
    reply = client.post("/v1/images", {"name": "base", "file": "base.qcow2", "format": "qcow2"})
    assert reply.status == 201, reply.body
    body: dict[str, Any] = reply.body
    return body


@pytest.fixture(params=["wsgiref", "waitress"])
def server(request: pytest.FixtureRequest, app: App) -> Iterator[LiveServer | ProdServer]:
    """The app behind `make serve`'s server, then behind `make serve-prod`'s."""
    live = LiveServer(app) if request.param == "wsgiref" else ProdServer(app)
    yield live
    live.stop()


# The dashboard's browser (tests/browser and tests/e2e): one driver per module (stopped before
# other tiers run), a fresh profile per test.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make setup-dev` (Debian's chromium package)",
                    pytrace=False)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as driver:
        yield driver


@pytest.fixture
def browser(playwright: Playwright, tmp_path: Path) -> Iterator[BrowserContext]:
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 1280, "height": 900}, locale="en-US", timezone_id="UTC")
    context.set_default_timeout(15000)
    yield context
    context.close()


@pytest.fixture
def page(browser: BrowserContext) -> Page:
    """A tab that fails the test on any script error or refused resource (CSP included)."""
    tab = browser.pages[0] if browser.pages else browser.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    tab.on("console", lambda message: problems.append(f"console: {message.text}")
           if message.type == "error" and "401" not in message.text
           and "404" not in message.text and "409" not in message.text else None)
    tab.problems = problems  # type: ignore[attr-defined]
    return tab


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """An 8 MiB qcow2 with every byte written, for an Origin to serve."""
    return full_qcow2(tmp_path / "source.qcow2")


@pytest.fixture
def origin(source: Path) -> Iterator[Origin]:
    """An HTTP server on 127.0.0.1 serving source (imports need IAAS_IMPORT_ALLOW_PRIVATE)."""
    server = Origin(source)
    yield server
    server.stop()
