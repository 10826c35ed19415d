"""The OpenAI-compatible HTTP server and its web chat page: `python3 -m model.serve` (cli.py).

cli.py (flags, start-up) -> app.py (the endpoints, the replies' text and shapes) -> worker.py
(one thread decodes every request with model/generate.py's Generator); schema.py checks requests.
"""
