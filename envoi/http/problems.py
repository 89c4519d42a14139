"""RFC 9457 problem details: every client error is a 4xx `application/problem+json` naming the field."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM = "application/problem+json"
BASE = "https://envoi.dev/problems/"


class Problem(Exception):
    def __init__(self, status: int, kind: str, title: str, detail: str = "", field: str | None = None,
                 errors: list[dict[str, Any]] | None = None, **extra: Any) -> None:
        super().__init__(detail or title)
        self.status, self.kind, self.title, self.detail = status, kind, title, detail
        self.errors = errors or ([{"field": field, "detail": detail or title}] if field else [])
        self.extra = extra

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"type": BASE + self.kind, "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = self.errors
            body["field"] = self.errors[0].get("field")
        body.update(self.extra)
        return body


def not_found(what: str, field: str | None = None) -> Problem:
    return Problem(404, "not-found", f"{what} not found", f"no {what} with this id in your account", field=field)


def problem_response(p: Problem, request: Request | None = None) -> JSONResponse:
    return JSONResponse(p.body(str(request.url.path) if request else None), status_code=p.status,
                        media_type=PROBLEM)


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [str(x) for x in loc if x not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            e = next(e for e in errors if e.get("type") == "json_invalid")
            msg = e.get("ctx", {}).get("error", "malformed JSON")
            return problem_response(Problem(400, "malformed-json", "Malformed JSON body", str(msg), field="body"),
                                    request)
        items = [{"field": _loc(tuple(e.get("loc", ()))), "detail": e.get("msg", "invalid"),
                  "code": e.get("type")} for e in errors]
        return problem_response(Problem(422, "validation", "Invalid request", items[0]["detail"] if items else "",
                                        errors=items), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {404: "not-found", 405: "method-not-allowed", 401: "unauthorized", 403: "forbidden",
                 413: "too-large", 415: "unsupported-media-type"}
        p = Problem(exc.status_code, kinds.get(exc.status_code, "http-error"), str(exc.detail), "")
        resp = problem_response(p, request)
        if exc.headers:
            resp.headers.update(exc.headers)
        return resp


class ProblemError(BaseModel):
    field: str | None = None
    detail: str
    code: str | None = None


class ProblemDocument(BaseModel):
    """RFC 9457 problem details, as every 4xx of this API returns them (media type application/problem+json)."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    field: str | None = None
    errors: list[ProblemError] = []


_DESCRIPTIONS = {
    400: "Malformed request (e.g. JSON that does not parse)", 401: "Missing or invalid API key",
    403: "Forbidden (admin key required, or the account cannot send)", 404: "Not found in your account",
    409: "Conflict with the resource's state", 413: "Request body too large",
    422: "Invalid field(s): `errors[].field` names each one",
}

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "model": ProblemDocument} for status, text in _DESCRIPTIONS.items()
}


def fix_problem_media_types(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI files the error model under application/json; our errors are application/problem+json."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if status.startswith("4") and "application/json" in content:
                    content[PROBLEM] = content.pop("application/json")
    return schema


MAX_ID = 2**63 - 1


def check_path_ids(request: Request) -> None:
    """An app-wide dependency: no NUL character in path or query parameters (PostgreSQL text cannot hold one);
    a path id outside the positive 64-bit range can name no row; answer 404 naming it
    rather than let the database driver overflow (found by the schemathesis fuzz test)."""
    for name, value in [*request.path_params.items(), *request.query_params.multi_items()]:
        if isinstance(value, str) and "\x00" in value:
            raise Problem(422, "validation", "Invalid parameter", "NUL characters (U+0000) are not allowed",
                          field=name)
    for name, value in request.path_params.items():
        if name.endswith("_id") and isinstance(value, str) and value.lstrip("-").isdigit():
            number = int(value)
            if number < 1 or number > MAX_ID:
                what = name.removesuffix("_id")
                raise Problem(404, "not-found", f"{what} not found", f"no {what} with this id in your account",
                              field=name)
