"""Jinja2 templates of the unsubscribe and double opt-in pages (a package so that wheels ship the *.html)."""
