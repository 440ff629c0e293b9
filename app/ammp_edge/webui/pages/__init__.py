"""The web UI's pages, one module per page group, each with `register(app, ctx)`."""
