"""The gateway layer: what every request passes through before the app."""
