"""The control page: `vcam run --ui` / `vcam ui` (server.py serves static/; store.py keeps settings and uploads)."""
