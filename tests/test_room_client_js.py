"""The JavaScript room client (orders/static/orders/room-client.js) in a real browser against a
real server: it catches up on what it missed while its connection was down."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orders.models import Venue
from tests.servers import DaphneServer, ServerGroup

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.system,
    pytest.mark.django_db(transaction=True),
]

ORDER = {"table": "3", "items": [{"name": "Bread", "quantity": 1, "unitPrice": "4.00"}]}


def place(server: DaphneServer, venue_id: int, token: str) -> None:
    request = urllib.request.Request(  # noqa: S310 -- loopback, http
        f"{server.base_url}/api/v1/orders",
        data=json.dumps({**ORDER, "venue": venue_id}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        assert answer.status == 201


@pytest.fixture
def server(transactional_db: None, tmp_path: Path) -> Iterator[DaphneServer]:
    with ServerGroup(tmp_path / "servers") as group:
        yield group.start()


@pytest.fixture
def page(server: DaphneServer) -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page()
        page.goto(f"{server.base_url}/health/live")  # the server's origin
        yield page
        browser.close()


START = """async ({url, token}) => {
  const { RoomClient } = await import("/static/orders/room-client.js");
  window.seen = []; window.states = [];
  window.client = new RoomClient({
    urls: [url], token, after: 0, baseDelay: 2,
    onEvent: (frame) => window.seen.push(frame.seq),
    onState: (state) => window.states.push(state),
  });
  window.client.start();
}"""


def test_the_browser_client_resumes_where_it_left_off(
    venue: Venue, venue_token: str, server: DaphneServer, page: Any
) -> None:
    # (The venue is made before the browser starts: Playwright runs an event loop on this
    # thread, and Django refuses the ORM inside one.)
    for _ in range(2):
        place(server, venue.pk, venue_token)
    url = server.ws_url(f"/ws/venues/{venue.pk}/")
    page.evaluate(START, {"url": url, "token": venue_token})
    page.wait_for_function("window.client.seq === 2 && window.states.at(-1) === 'live'")
    page.evaluate("window.client.socket.close()")  # the Wi-Fi drops
    page.wait_for_function("window.states.at(-1) === 'waiting'")
    for _ in range(3):  # orders placed while the screen is away (it waits 1 to 2 s)
        place(server, venue.pk, venue_token)
    page.wait_for_function("window.client.seq === 5", timeout=15_000)
    place(server, venue.pk, venue_token)  # and live again afterwards
    page.wait_for_function("window.client.seq === 6", timeout=10_000)
    assert page.evaluate("window.seen") == [1, 2, 3, 4, 5, 6]
    assert page.evaluate("window.client.connects") == 2
    assert "replaying" in page.evaluate("window.states")


RELOADING = """async ({url, token, api}) => {
  const { RoomClient } = await import("/static/orders/room-client.js");
  window.seen = []; window.reloads = 0; window.reloadStarted = false;
  window.client = new RoomClient({
    urls: [url], token, after: 0,
    onEvent: (frame) => window.seen.push(frame.seq),
    reload: async () => {
      window.reloads += 1;
      const answer = await fetch(api, { headers: { Authorization: `Bearer ${token}` } });
      const state = await answer.json();
      window.orders = state.orders.length;
      // The state is read: the order placed now is after it, and comes live during the
      // rest of a slow reload. (Set before the fetch, the test raced its own order with it.)
      window.reloadStarted = true;
      await new Promise((done) => setTimeout(done, 1500));  // a slow network
      return state.seq;
    },
  });
  window.client.start();
}"""


@pytest.fixture
def small_replay(tmp_path: Path, transactional_db: None) -> Iterator[DaphneServer]:
    with ServerGroup(tmp_path / "servers") as group:
        yield group.start(ROOM_REPLAY_MAX_EVENTS="2")


def test_an_event_during_a_reload_is_applied_after_it(
    venue: Venue, venue_token: str, small_replay: DaphneServer
) -> None:
    server = small_replay
    for _ in range(5):  # more than the server replays: the client must reload
        place(server, venue.pk, venue_token)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(f"{server.base_url}/health/live")
        page.evaluate(
            RELOADING,
            {
                "url": server.ws_url(f"/ws/venues/{venue.pk}/"),
                "token": venue_token,
                "api": f"/api/v1/venues/{venue.pk}/orders",
            },
        )
        page.wait_for_function("window.reloadStarted")
        place(server, venue.pk, venue_token)  # while the screen reloads its state
        page.wait_for_function("window.client.seq === 6", timeout=15_000)
        assert page.evaluate("window.reloads") == 1
        assert page.evaluate("window.orders") == 5
        assert page.evaluate("window.seen") == [6]  # the reload had 1-5; 6 came live, once
        browser.close()


DELAYS = """async () => {
  const { RoomClient } = await import("/static/orders/room-client.js");
  const delays = [];
  window.setTimeout = (_, ms) => { delays.push(ms); return 0; };
  Math.random = () => 1; // the top of every range
  const client = new RoomClient({ urls: ["ws://127.0.0.1:9/"], restartSpread: 5 });
  const close = (welcomed, code) => {
    client.stopped = false;
    client.socket = {};
    client.welcomed = welcomed;
    client.closed(client.socket, code);
  };
  close(true, 1011); // a live screen of a process that lost Redis: over the cap, 10 s
  close(false, 1011); // refused: half the cap to all of it, 10 s
  Math.random = () => 0; // the bottom of every range
  close(false, 1011); // 5 s
  close(true, 1006); // dropped: backoff from the start, 1 s
  close(true, 1006); // 2 s
  Math.random = () => 1;
  close(true, 1012); // restart: the spread, 5 s
  return delays;
}"""


def test_the_browser_client_spreads_its_return_after_1011_on_a_live_connection(
    page: Any,
) -> None:
    # Every screen of a process that loses Redis is closed with 1011 at once; coming back
    # within half a second of each other, they took the process's event loop (the soak).
    assert page.evaluate(DELAYS) == [10000, 10000, 5000, 1000, 2000, 5000]
