"""The breakfast demo app, written once per protocol: cgi_app, wsgi_app, asgi_app."""
