from __future__ import annotations

from django.urls import path, re_path

from orders.consumers import UnknownPathConsumer, VenueRoomConsumer

websocket_urlpatterns = [
    path("ws/venues/<int:venue_id>/", VenueRoomConsumer.as_asgi()),
    re_path(r"", UnknownPathConsumer.as_asgi()),
]
