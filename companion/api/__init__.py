"""The companion's HTTP API: `main.api_router` gathers the routers of `routes/` (one module per
area), and `deps` holds what they share (settings, database, caller and role checks, the
documented error answers, the security middleware). companion/app.py builds the app around it."""
