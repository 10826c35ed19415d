"""`python3 -m model.serve`: cli.py (flags, start-up) -> app.py (the routes and replies) ->
worker.py (one thread decodes every request with model/generate.py); schema.py checks requests."""
