"""Per-recipient rendering with Jinja2 in a sandbox: HTML auto-escaped, text and subject not.

Templates are compiled once per campaign (`CompiledTemplate`) and rendered per recipient."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateSyntaxError
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

_html_env = ImmutableSandboxedEnvironment(autoescape=True)
_text_env = ImmutableSandboxedEnvironment(autoescape=False)


class RenderError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    html: str
    text: str


class CompiledTemplate:
    def __init__(self, subject: str, html: str, text: str) -> None:
        parts = {"subject": (subject, _text_env), "html": (html, _html_env), "text": (text, _text_env)}
        self._t = {}
        for name, (source, env) in parts.items():
            try:
                self._t[name] = env.from_string(source)
            except TemplateSyntaxError as exc:
                raise RenderError(name, f"template syntax error line {exc.lineno}: {exc.message}") from exc
        self.uses_unsubscribe = {
            name: "unsubscribe_url" in source for name, (source, _) in parts.items()
        }

    def render(self, context: dict[str, Any]) -> Rendered:
        out = {}
        for name, tpl in self._t.items():
            try:
                out[name] = tpl.render(context)
            except (UndefinedError, SecurityError, TypeError, ValueError) as exc:
                raise RenderError(name, str(exc)) from exc
        # A header value can never carry CR/LF (header injection); the subject is one line.
        subject = " ".join(out["subject"].split())
        return Rendered(subject=subject, html=out["html"], text=out["text"])


def sample_context() -> dict[str, Any]:
    """A representative context used to validate templates when they are created."""
    return {
        "contact": {
            "first_name": "Camille", "last_name": "Martin", "email": "camille@example.fr",
            "mobile": "+33612345678", "crm_id": "C-1", "locale": "fr", "attributes": {},
        },
        "first_name": "Camille", "last_name": "Martin", "email": "camille@example.fr",
        "unsubscribe_url": "https://example.invalid/u/token",
        "sender": {"legal_name": "Exemple SARL", "postal_address": "1 rue de la Paix, 69001 Lyon",
                   "phone": "+33 4 00 00 00 00"},
    }
