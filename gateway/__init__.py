"""The lab's gateway: serves the demo app as CGI, WSGI or ASGI behind nginx."""

from gateway.config import MODES, Mode, Settings

__all__ = ["MODES", "Mode", "Settings"]
__version__ = "0.1.0"
