"""The public status page as an anonymous visitor sees it: headless Chromium, real server.

Opened at a laptop's 1,400 x 900 and a phone's 390 x 844; with SCREENSHOT_DIR set, each is
saved as a PNG to look at (`scripts/screenshots`).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from monitoring.alerting.defaults import install_defaults
from monitoring.models import AlertRule, Incident, IncidentStatus, MaintenanceWindow
from monitoring.status import rollup
from tests.servers import ServerGroup
from tests.test_pages_in_browser import shoot

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]

LAPTOP = {"width": 1400, "height": 900}
PHONE = {"width": 390, "height": 844}
HOSTNAME = "ip-10-0-3-117.eu-west-1.compute.internal"


def seed() -> None:
    """Two months of monitoring: a resolved outage last week, a slow day, an open incident
    with what the operator wrote, and maintenance to come. Written before the browser starts
    (Playwright's event loop must not meet the ORM)."""
    install_defaults()
    now = timezone.now()
    AlertRule.objects.update(created_at=now - timedelta(days=60))

    def incident(rule: str, opened: timedelta, lasted: timedelta | None, **fields: Any) -> None:
        found = AlertRule.objects.get(name=rule)
        start = now - opened
        Incident.objects.create(
            rule=found,
            title=fields.pop("title", found.name),
            severity=found.severity,
            status=IncidentStatus.RESOLVED if lasted else IncidentStatus.FIRING,
            opened_at=start,
            last_seen_at=start + (lasted or opened),
            resolved_at=start + lasted if lasted else None,
            first_value=1,
            peak_value=2,
            last_value=1,
            **fields,
        )

    incident("HTTP errors critical", timedelta(days=7), timedelta(hours=2))
    incident("WebSocket latency", timedelta(days=20), timedelta(hours=5))
    incident("Slack delivery failing", timedelta(days=33), timedelta(minutes=40))
    incident(
        "WebSocket latency",
        timedelta(minutes=25),
        None,
        title=f"ws.latency_avg_ms 1834 ms on {HOSTNAME}",
        public_title="Live order updates are slow",
        public_summary="Some venues see new orders on their screens up to a minute late. "
        "Orders are not lost; we are working on it.",
    )
    MaintenanceWindow.objects.create(
        title="Payment provider upgrade",
        public_text="Ordering may pause for up to two minutes.",
        components=["ordering"],
        starts_at=now + timedelta(days=2),
        ends_at=now + timedelta(days=2, hours=1),
    )
    rollup.roll_up(now)


@pytest.fixture
def server(transactional_db: None, tmp_path: Path) -> Iterator[str]:
    seed()
    with ServerGroup(tmp_path / "servers") as group:
        yield group.start().base_url


@pytest.fixture
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


def visit(browser: Any, server: str, viewport: dict[str, int]) -> Any:
    page = browser.new_context(viewport=viewport).new_page()  # no cookies: a visitor
    response = page.goto(f"{server}/status/")
    assert response.status == 200
    assert "/admin/login" not in page.url
    return page


def no_sideways_scroll(page: Any) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than the screen"


def test_a_visitor_sees_each_component_its_state_history_and_the_news(
    server: str, browser: Any
) -> None:
    page = visit(browser, server, LAPTOP)
    shoot(page, "status-laptop")
    no_sideways_scroll(page)
    assert page.inner_text(".overall .words") == "Some services are degraded"
    heads = page.locator(".component h3").all_inner_texts()
    assert heads == ["Ordering", "Live order updates", "Notifications"]
    states = page.locator(".component .state .words").all_inner_texts()
    assert states == ["Operational", "Degraded", "Operational"]
    # Monitoring began 60 days ago; last week's two hours of outage, over those days.
    uptime = page.locator(".component .uptime").all_inner_texts()
    assert uptime[0] == f"{100 - 200 / (60 * 24):.2f}% uptime over 61 days"
    news = page.inner_text("article.notice.degraded")
    assert "Live order updates are slow" in news
    assert "up to a minute late" in news
    assert "Payment provider upgrade" in page.inner_text("article.notice.maintenance")
    assert HOSTNAME not in page.content()
    assert "ws.latency" not in page.content()
    # 90 days a bar each, last week's outage among them, told by its pattern and its title.
    bars = page.locator(".component").nth(0).locator(".bar")
    assert bars.count() == 90
    outage = page.locator(".component").nth(0).locator(".bar.s-outage")
    assert outage.count() == 1
    label = outage.get_attribute("title")
    assert "% uptime, outage" in label
    outage.focus()
    assert page.inner_text(".component >> nth=0 >> .readout") == label
    pattern = outage.evaluate("e => getComputedStyle(e).backgroundImage")
    assert "gradient" in pattern
    assert "No data" in page.inner_text(".legend")


def test_on_a_phone_the_page_fits_and_shows_the_last_30_days(server: str, browser: Any) -> None:
    page = visit(browser, server, PHONE)
    shoot(page, "status-phone")
    no_sideways_scroll(page)
    first = page.locator(".component").nth(0)
    assert first.locator(".bar:visible").count() == 30
    assert "30 days ago" in first.locator(".axis").inner_text()
    widths = first.locator(".bar:visible").evaluate_all(
        "bars => bars.map(b => b.getBoundingClientRect().width)"
    )
    assert min(widths) >= 6, widths
