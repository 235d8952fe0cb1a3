from __future__ import annotations

from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"
    verbose_name = "Venues and orders"

    def ready(self) -> None:
        from django.db.models.signals import m2m_changed, post_save

        from orders import revocation
        from orders.models import Venue, VenueAccessToken

        post_save.connect(_announce_new_venue, sender=Venue, dispatch_uid="orders.new_venue")
        post_save.connect(
            revocation.token_saved, sender=VenueAccessToken, dispatch_uid="orders.token_revoked"
        )
        m2m_changed.connect(
            revocation.members_changed,
            sender=Venue.members.through,
            dispatch_uid="orders.members_changed",
        )


def _announce_new_venue(
    sender: object, instance: object, created: bool, raw: bool = False, **kwargs: object
) -> None:
    if created and not raw:
        from orders.events import venue_signed_up

        venue_signed_up(instance)  # type: ignore[arg-type]
