from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from weakref import WeakKeyDictionary

from django.contrib import admin, messages
from django.contrib.admin.widgets import AdminTimeWidget
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers

from orders import hours
from orders.models import (
    OpeningException,
    OpeningHours,
    Order,
    OrderEvent,
    OrderItem,
    Venue,
    VenueAccessToken,
)
from orders.pictures import venue_day

# A token created by save_model, until response_add shows it: only ever in this request.
_issued: WeakKeyDictionary[VenueAccessToken, str] = WeakKeyDictionary()


class OpeningHoursFormSet(BaseInlineFormSet):  # type: ignore[type-arg]
    def clean(self) -> None:
        super().clean()
        services = [
            (form.cleaned_data["weekday"], form.cleaned_data["opens"], form.cleaned_data["closes"])
            for form in self.forms
            if form.cleaned_data
            and not form.cleaned_data.get("DELETE")
            and all(form.cleaned_data.get(f) is not None for f in ("weekday", "opens", "closes"))
        ]
        clash = hours.first_overlap(services)
        if clash is not None:
            raise ValidationError(f"Two services overlap: {clash[0]} and {clash[1]}.")


# Hours as people write them: 18:00, not 18:00:00.
HOURS_AND_MINUTES: Mapping[type[models.Field[Any, Any]], Mapping[str, Any]] = {
    models.TimeField: {"widget": AdminTimeWidget(format="%H:%M")}
}


class OpeningHoursInline(admin.TabularInline):  # type: ignore[type-arg]
    model = OpeningHours
    formset = OpeningHoursFormSet
    fields = ["weekday", "opens", "closes"]
    formfield_overrides = HOURS_AND_MINUTES
    extra = 0


class OpeningExceptionFormSet(BaseInlineFormSet):  # type: ignore[type-arg]
    def clean(self) -> None:
        super().clean()
        days: dict[object, list[bool]] = {}
        for form in self.forms:
            data = form.cleaned_data
            if data and not data.get("DELETE") and data.get("date") is not None:
                days.setdefault(data["date"], []).append(bool(data.get("closed")))
        for day, closed in sorted(days.items(), key=lambda item: str(item[0])):
            if any(closed) and len(closed) > 1:
                raise ValidationError(
                    f"{day} is marked closed and also given hours: keep one or the other."
                )


class OpeningExceptionInline(admin.TabularInline):  # type: ignore[type-arg]
    model = OpeningException
    formset = OpeningExceptionFormSet
    fields = ["date", "closed", "opens", "closes", "note"]
    formfield_overrides = HOURS_AND_MINUTES
    extra = 0


@admin.register(Venue)
class VenueAdmin(admin.ModelAdmin):
    change_form_template = "admin/orders/venue/change_form.html"
    list_display = [
        "name",
        "id",
        "slug",
        "timezone",
        "open_now",
        "currency",
        "is_active",
        "created_at",
    ]
    list_filter = ["is_active", "currency"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    filter_horizontal = ["members"]
    inlines = [OpeningHoursInline, OpeningExceptionInline]

    @admin.display(description="Open now", boolean=True)
    def open_now(self, venue: Venue) -> bool:
        schedule = hours.schedule(venue.pk)
        return schedule is not None and schedule.is_open(timezone.now())

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view(self.at_a_glance)
        return [
            path("<path:object_id>/glance/", view, name="orders_venue_glance"),
            *super().get_urls(),
        ]

    def at_a_glance(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Its screens online now and over the day, its orders per hour against last week."""
        venue = self.get_object(request, object_id)
        if venue is None or not self.has_view_permission(request, venue):
            raise Http404
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": venue,
            "title": f"{venue.name} at a glance",
            "day": venue_day(venue, timezone.now()),
        }
        response = TemplateResponse(request, "admin/orders/venue/glance.html", context)
        add_never_cache_headers(response)
        return response


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
        raw = ""
        if not change:
            raw = VenueAccessToken.generate()
            obj.set_token(raw)
            obj.created_by = request.user if request.user.is_authenticated else None
        super().save_model(request, obj, form, change)
        if raw:
            _issued[obj] = raw

    def response_add(
        self, request: HttpRequest, obj: VenueAccessToken, post_url_continue: str | None = None
    ) -> HttpResponse:
        """Show the new token on the page that answers the form, once.

        Not as a message: those travel in the signed but readable `messages` cookie, and a
        redirect would need it kept somewhere until the next request.
        """
        raw = _issued.pop(obj, "")
        if not raw:
            return super().response_add(request, obj, post_url_continue)
        opts = self.opts
        context = {
            **self.admin_site.each_context(request),
            "opts": opts,
            "title": f"Token for {obj.venue}",
            "token": obj,
            "raw": raw,
            "websocket_path": f"/ws/venues/{obj.venue_id}/?token={raw}",
            "change_url": reverse(
                f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]
            ),
            "add_url": reverse(f"admin:{opts.app_label}_{opts.model_name}_add"),
            "list_url": reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"),
        }
        response = TemplateResponse(
            request, "admin/orders/venueaccesstoken/token_created.html", context
        )
        add_never_cache_headers(response)  # no copy in a browser or proxy cache either
        return response

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[VenueAccessToken]) -> None:
        revoking = list(queryset.filter(revoked_at__isnull=True))
        for token in revoking:
            token.revoked_at = timezone.now()
            token.save(update_fields=["revoked_at"])  # closes its open connections too
        count = len(revoking)
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)


class OrderItemInline(admin.TabularInline):
    model = OrderItem
    extra = 0
    fields = ("name", "quantity", "unit_price")


class OrderEventInline(admin.TabularInline):
    model = OrderEvent
    extra = 0
    can_delete = False
    fields = ("created_at", "kind", "payload")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = [
        "number",
        "venue",
        "table",
        "status",
        "payment_status",
        "total_with_currency",
        "created_at",
    ]
    list_filter = ["status", "payment_status", "venue"]
    list_select_related = ["venue"]
    search_fields = ["table", "number", "venue__name"]
    date_hierarchy = "created_at"
    raw_id_fields = ["venue"]
    readonly_fields = ["venue", "number", "currency", "total", "created_at", "updated_at"]
    inlines = [OrderItemInline, OrderEventInline]

    @admin.display(description="Total", ordering="total")
    def total_with_currency(self, obj: Order) -> str:
        return f"{obj.total} {obj.currency}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # orders come through the API, which numbers them and raises events


@admin.register(OrderEvent)
class OrderEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "kind", "venue", "order"]
    list_filter = ["kind", "venue"]
    list_select_related = ["venue", "order"]
    raw_id_fields = ["venue", "order"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
