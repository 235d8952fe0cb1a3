from __future__ import annotations

from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"
    verbose_name = "Venues and orders"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.signals import user_logged_out
        from django.db.models.signals import m2m_changed, post_delete, post_save

        from monitoring import screens
        from monitoring.alerting import scopes
        from orders import anomaly, dashboard, hours, hub, metrics, retention, revocation
        from orders.models import OpeningException, OpeningHours, Venue, VenueAccessToken

        retention.register()
        metrics.register()
        anomaly.register_metrics()
        scopes.name_scopes_with(_venue_name)
        screens.count_screens_with(hub.screens_per_venue)
        dashboard.register()

        post_save.connect(_announce_new_venue, sender=Venue, dispatch_uid="orders.new_venue")
        # Opening hours: an edit in this process is seen at once (others': orders.hours).
        for model in (Venue, OpeningHours, OpeningException):
            for changed in (post_save, post_delete):
                changed.connect(hours.forget, sender=model, dispatch_uid=f"orders.hours.{model}")
        # Every way a room grant ends closes the connections it let in (orders/revocation.py).
        user = get_user_model()
        for signal, receiver, sender in (
            (post_save, revocation.token_saved, VenueAccessToken),
            (post_delete, revocation.token_deleted, VenueAccessToken),
            (post_save, revocation.venue_saved, Venue),
            (post_delete, revocation.venue_deleted, Venue),
            (m2m_changed, revocation.members_changed, Venue.members.through),
            (post_save, revocation.user_saved, user),
            (post_delete, revocation.user_deleted, user),
            (user_logged_out, revocation.user_logged_out, None),
        ):
            signal.connect(receiver, sender=sender, dispatch_uid=f"orders.{receiver.__name__}")


def _announce_new_venue(
    sender: object, instance: object, created: bool, raw: bool = False, **kwargs: object
) -> None:
    if created and not raw:
        from orders.events import venue_signed_up

        venue_signed_up(instance)  # type: ignore[arg-type]


def _venue_name(scope: str) -> str | None:
    from orders.models import Venue

    if not scope.isdigit() or len(scope) > 18:
        return None
    return Venue.objects.filter(pk=int(scope)).values_list("name", flat=True).first()
