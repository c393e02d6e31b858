"""The web dashboard: login, live prices and the user's live alerts over server-sent events.

Start it with ``python -m web``; build the ASGI app with ``web.app.create_app(settings)``.
"""
