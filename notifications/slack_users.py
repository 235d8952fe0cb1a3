"""Which Django user a Slack member is: the link set in the admin, or else one made once from
the e-mail address Slack has confirmed for them.

A member nobody linked is looked up with users.info (through the transport, within its
short timeout) when they first click or use /inkwave. Only a confirmed address of a full
member (not a bot, not deactivated, not a guest) that belongs to exactly one Django user,
who is active and not linked to another member, makes a link. The link is recorded, so
the lookup happens once; it is logged with ids only.

Deleting a link does not revoke anyone: the next click matches the e-mail again. To stop
someone acting from Slack, take the permission away or deactivate the user.
"""

from __future__ import annotations

import re
from enum import StrEnum

import structlog
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from notifications.models import SlackLinkSource, SlackUser
from notifications.slack import SlackMember, TransportError, transport_from_settings

logger = structlog.get_logger(__name__)

MEMBER_ID = re.compile(r"[UW][A-Z0-9]{2,31}")


class NotLinked(StrEnum):
    """Why a member could not be linked (logged as the refusal's reason)."""

    BAD_ID = "unlinked: not a member id"
    SLACK_UNREACHABLE = "unlinked: Slack unreachable"
    SLACK_ERROR = "unlinked: Slack refused the lookup"
    NOT_A_PERSON = "unlinked: a bot, deactivated or a guest"
    UNCONFIRMED = "unlinked: e-mail not confirmed"
    NO_USER = "unlinked: no active user with that e-mail"
    AMBIGUOUS = "unlinked: several users with that e-mail"
    TAKEN = "unlinked: that user is linked to another member"


def is_linked(slack_user_id: str) -> bool:
    return SlackUser.objects.filter(slack_user_id=slack_user_id).exists()


def link(slack_user_id: str) -> NotLinked | None:
    """None when the member is linked (before, or now by e-mail), else why not. Makes at
    most one Web API call, and none for a member already linked."""
    if is_linked(slack_user_id):
        return None
    if not MEMBER_ID.fullmatch(slack_user_id):
        return NotLinked.BAD_ID
    try:
        member = transport_from_settings().member(slack_user_id)
    except TransportError as exc:
        logger.warning("slack_user_lookup_failed", slack_user=slack_user_id, error=str(exc))
        return NotLinked.SLACK_ERROR if exc.permanent else NotLinked.SLACK_UNREACHABLE
    problem = _vouches(member)
    if problem is not None:
        return problem
    return _record(member)


def _vouches(member: SlackMember) -> NotLinked | None:
    if member.is_bot or member.deleted or member.guest:
        return NotLinked.NOT_A_PERSON
    if not member.email or not member.email_confirmed:
        return NotLinked.UNCONFIRMED
    return None


def _record(member: SlackMember) -> NotLinked | None:
    # Every user with the address, active or not: an address two accounts share names
    # nobody in particular, and is never matched.
    users = list(get_user_model().objects.filter(email__iexact=member.email)[:2])
    if len(users) > 1:
        return NotLinked.AMBIGUOUS
    if not users or not users[0].is_active:
        return NotLinked.NO_USER
    (user,) = users
    try:
        with transaction.atomic():
            SlackUser.objects.create(
                user=user, slack_user_id=member.id, linked_via=SlackLinkSource.EMAIL
            )
    except IntegrityError:
        # The same member's other click linked them meanwhile; or the user is some other
        # member's already (set in the admin), which an e-mail does not override.
        return None if is_linked(member.id) else NotLinked.TAKEN
    logger.info("slack_user_linked", slack_user=member.id, user=user.pk, via="email")
    return None
