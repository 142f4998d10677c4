"""The Flask web site and JSON API over one model bundle (see `flask_app.app` for routes and commands)."""
from flask_app.app import create_app

__all__ = ["create_app"]
