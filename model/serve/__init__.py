"""The OpenAI-compatible HTTP server and its web chat page: `python3 -m model.serve` (cli.py).

cli.py (flags, start-up) -> app.py (the endpoints) -> worker.py (one thread decodes the batch)
-> the decoder in model/decoding.py; schema.py checks requests, responses.py shapes replies.
"""
