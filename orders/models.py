from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from zoneinfo import available_timezones

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

TOKEN_PREFIX = "iwv_"  # noqa: S105 -- a public marker, not a secret
# A venue token's last use is written at most this often, not on every connection.
TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)


def validate_timezone(value: str) -> None:
    if value not in available_timezones():
        raise ValidationError(f"{value!r} is not a known IANA time zone (e.g. Europe/London).")


class Venue(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    currency = models.CharField(
        max_length=3,
        default="USD",
        validators=[RegexValidator(r"^[A-Z]{3}$", "Use an ISO 4217 code such as USD or EUR.")],
    )
    is_active = models.BooleanField(default=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="venues",
        help_text="Staff users who may follow this venue's room. Superusers and staff see all.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def is_accessible_by(self, user: AbstractBaseUser | AnonymousUser) -> bool:
        if not user.is_authenticated or not user.is_active:
            return False
        if getattr(user, "is_staff", False):
            return True
        return self.members.filter(pk=user.pk).exists()


def hash_token(raw: str) -> str:
    # Tokens are 256-bit random strings, so a fast hash is enough: there is nothing to
    # brute-force, unlike a password.
    return hashlib.sha256(raw.encode()).hexdigest()


class VenueAccessTokenQuerySet(models.QuerySet["VenueAccessToken"]):
    def active(self) -> VenueAccessTokenQuerySet:
        return self.filter(revoked_at__isnull=True, venue__is_active=True)


class VenueAccessToken(models.Model):
    """A device's credential for one venue's room (a kitchen screen, a waiter's tablet)."""

    venue = models.ForeignKey(Venue, on_delete=models.CASCADE, related_name="access_tokens")
    name = models.CharField(max_length=100, help_text="What holds it, e.g. 'Kitchen screen'.")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(
        max_length=12, editable=False, help_text="The token's first characters."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = VenueAccessTokenQuerySet.as_manager()

    class Meta:
        ordering = ["venue", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def generate() -> str:
        return TOKEN_PREFIX + secrets.token_urlsafe(32)

    def set_token(self, raw: str) -> None:
        self.token_hash = hash_token(raw)
        self.prefix = raw[: len(TOKEN_PREFIX) + 4]

    @classmethod
    def issue(
        cls, venue: Venue, name: str, created_by: User | None = None
    ) -> tuple[VenueAccessToken, str]:
        raw = cls.generate()
        token = cls(venue=venue, name=name, created_by=created_by)
        token.set_token(raw)
        token.save()
        return token, raw

    @classmethod
    def authenticate(cls, raw: str) -> VenueAccessToken | None:
        if not raw.startswith(TOKEN_PREFIX) or len(raw) > 100:
            return None
        token = (
            cls.objects.active().select_related("venue").filter(token_hash=hash_token(raw)).first()
        )
        if token is not None:
            token.touch()
        return token

    def touch(self) -> None:
        now = timezone.now()
        stale = now - TOKEN_TOUCH_INTERVAL
        type(self).objects.filter(pk=self.pk).filter(
            models.Q(last_used_at__isnull=True) | models.Q(last_used_at__lt=stale)
        ).update(last_used_at=now)

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None
