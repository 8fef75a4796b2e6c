"""The project's own RFC 3875 CGI implementation (the stdlib ``cgi`` module is gone in 3.13).

``environ`` and ``response`` are pure (request -> meta-variables, script output
-> response); ``runner`` runs one script; ``bridge`` is the WSGI callable that
gunicorn serves in CGI mode.
"""

from gateway.cgi.bridge import make_cgi_app
from gateway.cgi.environ import CGIRequest, build_meta_variables
from gateway.cgi.response import CGIResponse, CGIResponseError, parse_cgi_response
from gateway.cgi.runner import run_cgi

__all__ = [
    "CGIRequest",
    "CGIResponse",
    "CGIResponseError",
    "build_meta_variables",
    "make_cgi_app",
    "parse_cgi_response",
    "run_cgi",
]
