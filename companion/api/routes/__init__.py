"""One router per area of the API: health (ops), auth (login, sessions, tokens, users), events
(events, CSV export, stats, dead letters, live stream), alerts, devices (sites, devices and their
configuration). The fleet's routers live with the fleet (companion/fleet.py)."""
