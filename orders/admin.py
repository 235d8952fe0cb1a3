from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from orders.models import Venue, VenueAccessToken


@admin.register(Venue)
class VenueAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "timezone", "currency", "is_active", "created_at"]
    list_filter = ["is_active", "currency"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    filter_horizontal = ["members"]


@admin.register(VenueAccessToken)
class VenueAccessTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "venue", "prefix", "created_at", "last_used_at", "status"]
    list_filter = ["venue", ("revoked_at", admin.EmptyFieldListFilter)]
    list_select_related = ["venue"]
    search_fields = ["name", "prefix", "venue__name"]
    autocomplete_fields = ["venue"]
    readonly_fields = ["prefix", "created_at", "created_by", "last_used_at"]
    actions = ["revoke"]

    @admin.display(description="Status")
    def status(self, obj: VenueAccessToken) -> str:
        return "revoked" if obj.is_revoked else "active"

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ["venue", "name"]
        return ["venue", "name", "prefix", "created_at", "created_by", "last_used_at", "revoked_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return []
        return ["venue", *self.readonly_fields]

    def save_model(
        self, request: HttpRequest, obj: VenueAccessToken, form: Any, change: bool
    ) -> None:
        if not change:
            raw = VenueAccessToken.generate()
            obj.set_token(raw)
            obj.created_by = request.user if request.user.is_authenticated else None
            messages.warning(
                request,
                f"Token for {obj.venue}: {raw} — copy it now; it is stored hashed and "
                "cannot be shown again.",
            )
        super().save_model(request, obj, form, change)

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[VenueAccessToken]) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)
