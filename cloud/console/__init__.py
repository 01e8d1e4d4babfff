"""The staff console: pages served by the API at ``/console`` (docs/console.md).

Templates (Jinja2) draw each page's frame in the user's language; small scripts fill it from
the API with the user's own token, so the console sees exactly what the API lets the user see.
Every asset is served from here (``static/``, the vendored chart library included): the console
works on a compound's network without the internet.
"""
