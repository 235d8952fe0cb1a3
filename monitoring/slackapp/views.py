"""The Slack app's request URLs: interactivity (button clicks) and the /inkwave command.

Each request is checked before anything reads it: its size from the header, then Slack's
signature over the raw bytes (notifications.slack_requests). A click is answered at once with
an empty 200 (Slack shows nothing for it; its HTTP answer carries no message): the incident
changes in this request, in one short transaction (the admin's own code path), and what is
slow goes on after the answer: the message's in-place edit through the outbox, and the
ephemeral note to whoever clicked through its response_url, both sent by workers.
"""

from __future__ import annotations

import structlog
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from monitoring.alerting.buttons import Action
from monitoring.slackapp import actions, commands
from notifications import slack_requests
from notifications.slack_requests import BadRequest

logger = structlog.get_logger(__name__)


def _refusal(request: HttpRequest) -> HttpResponse | None:
    """A 4xx for what is not a signed Slack request, or None: checked before any parsing."""
    if not slack_requests.interactive():
        return HttpResponse("Slack interactivity is not configured.", status=404)
    try:
        length = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        return HttpResponse("bad Content-Length", status=400)
    if length > slack_requests.MAX_BODY_BYTES:
        logger.warning("slack_request_refused", reason="too large", length=length)
        return HttpResponse("too large", status=413)
    problem = slack_requests.signature_problem(
        request.body, request.headers, secret=settings.SLACK_SIGNING_SECRET, now=timezone.now()
    )
    if problem:
        logger.warning("slack_request_refused", reason=problem)
        return HttpResponse("refused", status=401)
    return None


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
    answer = commands.answer(
        fields.get("text", "")[:200],
        fields.get("user_id", "")[:32],
        fields.get("user_name", "")[:100],
    )
    return JsonResponse(answer)
