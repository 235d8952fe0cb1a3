"""The Slack app's request URLs: interactivity (button clicks) and the /inkwave command.

Each request is checked before anything reads it: its size from the header, then Slack's
signature over the raw bytes (notifications.slack_requests). A click is answered at once with
an empty 200 (Slack shows nothing for it; its HTTP answer carries no message): the incident
changes in this request, in one short transaction (the admin's own code path), and what is
slow goes on after the answer: the message's in-place edit through the outbox, and the
ephemeral note to whoever clicked through its response_url, both sent by workers.

Without a database nothing can be checked or changed: a signed request then gets an empty
200 and an ephemeral "Inkwave can't reach its database" through its response_url, never a
500. Slack shows nobody a click's HTTP answer, and shows a failed one (a 5xx) as a bare
warning sign, a command's as "failed with the error http_service_error"; the response_url
note is shown even when waiting for a connection made the HTTP answer late.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from inkwave.api_errors import is_database_unreachable
from monitoring.alerting.buttons import Action
from monitoring.slackapp import actions, commands
from notifications import slack_requests
from notifications.slack_requests import BadRequest

logger = structlog.get_logger(__name__)


DATABASE_DOWN = "Inkwave can't reach its database, so nothing changed: try again, or use the admin."


def _refusal(request: HttpRequest) -> HttpResponse | None:
    """A 4xx for what is not a signed Slack request, or None: checked before any parsing,
    and before the database (which may be down)."""
    if not slack_requests.interactive():
        return HttpResponse("Slack interactivity is not configured.", status=404)
    try:
        length = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        return HttpResponse("bad Content-Length", status=400)
    if length > slack_requests.MAX_BODY_BYTES:
        logger.warning("slack_request_refused", reason="too large", length=length)
        return HttpResponse("too large", status=413)
    problem = slack_requests.forgery_problem(
        request.body, request.headers, secret=settings.SLACK_SIGNING_SECRET, now=timezone.now()
    )
    if problem:
        logger.warning("slack_request_refused", reason=problem)
        return HttpResponse("refused", status=401)
    return None


def _replayed(request: HttpRequest) -> HttpResponse | None:
    if slack_requests.first_sight(request.headers, timezone.now()):
        return None
    logger.warning("slack_request_refused", reason="replayed")
    return HttpResponse("refused", status=401)


def _without_database(
    work: Callable[[], HttpResponse], down: Callable[[], HttpResponse]
) -> HttpResponse:
    """`work()`, or `down()` if the database cannot be reached (a query that failed on a live
    database is still an error: it is not hidden behind "try again")."""
    try:
        return work()
    except DatabaseError as exc:
        if not is_database_unreachable(exc):
            raise
        logger.error("slack_request_without_database", error=type(exc).__name__)
        return down()


@csrf_exempt
@require_POST
def interactivity(request: HttpRequest) -> HttpResponse:
    refused = _refusal(request)
    if refused is not None:
        return refused
    try:
        payload = slack_requests.block_actions(request.body)
    except BadRequest as exc:
        logger.warning("slack_request_refused", reason=f"malformed: {exc}")
        return HttpResponse("malformed payload", status=400)
    response_url = payload.get("response_url", "")

    def down() -> HttpResponse:
        # A click's HTTP answer is not shown to anyone: the note goes to its response_url.
        if response_url:
            slack_requests.answer_now(response_url, DATABASE_DOWN)
        return HttpResponse(status=200)

    return _without_database(lambda: _replayed(request) or _click(payload), down)


def _click(payload: slack_requests.BlockActionsJSON) -> HttpResponse:
    if payload.get("type") != "block_actions":
        logger.info("slack_interaction_ignored", type=payload.get("type", "")[:40])
        return HttpResponse(status=200)
    user = payload.get("user", {})
    action_json = payload["actions"][0]  # block_actions() gives exactly one
    response_url = payload.get("response_url", "")
    slack_user_id = user.get("id", "")
    try:
        action = Action(action_json.get("action_id", ""))
    except ValueError:
        outcome = actions.refuse(slack_user_id, "unknown", "That button is not one of ours.")
    else:
        outcome = actions.perform(
            action,
            action_json.get("value", ""),
            slack_user_id,
            user.get("username") or user.get("name", ""),
            timezone.now(),
        )
    if not outcome.done and response_url:
        # The winner sees the message change; everyone else is told why nothing did.
        slack_requests.answer_later(response_url, outcome.text)
    return HttpResponse(status=200)


@csrf_exempt
@require_POST
def command(request: HttpRequest) -> HttpResponse:
    refused = _refusal(request)
    if refused is not None:
        return refused
    try:
        fields = slack_requests.form(request.body)
    except BadRequest:
        return HttpResponse("malformed form", status=400)

    def answer() -> HttpResponse:
        return _replayed(request) or JsonResponse(
            commands.answer(
                fields.get("text", "")[:200],
                fields.get("user_id", "")[:32],
                fields.get("user_name", "")[:100],
            )
        )

    def down() -> HttpResponse:
        # Through the response_url too, not in this answer: waiting for a connection may
        # have taken Slack's 3 s, and a late answer is shown as "operation_timeout".
        response_url = fields.get("response_url", "")
        if response_url:
            slack_requests.answer_now(response_url, DATABASE_DOWN)
        return HttpResponse(status=200)

    return _without_database(answer, down)
