from __future__ import annotations

from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"
    verbose_name = "Venues and orders"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from orders.models import Venue

        post_save.connect(_announce_new_venue, sender=Venue, dispatch_uid="orders.new_venue")


def _announce_new_venue(
    sender: object, instance: object, created: bool, raw: bool = False, **kwargs: object
) -> None:
    if created and not raw:
        from orders.events import venue_signed_up

        venue_signed_up(instance)  # type: ignore[arg-type]
