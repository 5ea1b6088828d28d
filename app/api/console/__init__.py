"""The operator console: a small web UI served by the MRFC-AS at /console/ (issue 10).

Pages are HTML shells; all data goes through the token-protected REST API and its event
stream. See docs/console.md.
"""

from app.api.console.routes import router

__all__ = ["router"]
