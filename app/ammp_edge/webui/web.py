"""What every page of the web UI shares: its context, template rendering, JSON answers, form access."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import bottle
from bottle import HTTPResponse, request

from . import auth
from .jobs import Jobs
from .state import WebState

HERE = Path(__file__).resolve().parent
TEMPLATES = [str(HERE / "templates")]
STATIC = HERE / "static"


class Ctx:
    """Per-app state the routes share."""

    def __init__(self, state: WebState, jobs: Jobs | None = None):
        self.state = state
        self.sessions = auth.Sessions(state.store)
        self.limiter = auth.LoginLimiter()
        self.jobs = jobs or Jobs()


def render(name: str, ctx: Ctx, **kw: Any) -> str:
    sid = request.environ.get("ae.sid")
    return bottle.template(
        name,
        template_lookup=TEMPLATES,
        csrf=ctx.sessions.csrf_token(sid) if sid else "",
        page=name,
        path=request.path,
        **kw,
    )


def as_json(data: Any, status_code: int = 200) -> HTTPResponse:
    return HTTPResponse(json.dumps(data, default=str), status=status_code, headers={"Content-Type": "application/json"})


def bad_request(message: str, status_code: int = 400) -> HTTPResponse:
    """A refusal saying what was wrong: JSON for /api/, plain text for pages."""
    if request.path.startswith("/api/"):
        return as_json({"error": message}, status_code)
    return HTTPResponse(message + "\n", status=status_code, headers={"Content-Type": "text/plain; charset=utf-8"})


def client_ip() -> str:
    return request.environ.get("REMOTE_ADDR") or "?"


def _utf8(text: str, what: str) -> str:
    """A WSGI (latin-1) text as the UTF-8 it carries; 400 naming `what` and the byte when it is not."""
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeEncodeError:
        return text  # already decoded
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start]
        raise bad_request(f"{what} is not valid UTF-8 (byte 0x{byte:02x} at offset {exc.start})") from None


def _text_fields(fields: bottle.FormsDict, kind: str) -> bottle.FormsDict:
    out = bottle.FormsDict()
    out.recode_unicode = False
    for key, value in fields.allitems():
        if fields.recode_unicode:
            key = _utf8(key, f"a {kind} field name")
            if isinstance(value, str):
                value = _utf8(value, f"{kind} field {key!r}")
        out.append(key, value)
    return out


def form() -> bottle.FormsDict:
    """The request's form fields as text; a field that is not UTF-8 ends the request with 400 naming it."""
    cached = request.environ.get("ae.form")
    if cached is None:
        try:
            fields = request.forms
        except UnicodeDecodeError as exc:  # multipart: bottle decodes the values itself
            byte = exc.object[exc.start]
            raise bad_request(
                f"form field {_multipart_culprit()!r} is not valid UTF-8 (byte 0x{byte:02x} at offset {exc.start})"
            ) from None
        cached = request.environ["ae.form"] = _text_fields(fields, "form")
    return cached


def _multipart_culprit() -> str:
    """Which part of a multipart body is not UTF-8 (the error bottle raises does not say)."""
    body = request.body
    body.seek(0)
    _, options = bottle._parse_http_header(request.content_type)[0]
    parser = bottle._MultipartParser(body, options.get("boundary"), request.content_length)
    for part in parser.parse():
        if not part.filename and part.is_buffered():
            try:
                part.value.encode("latin-1").decode("utf-8")
            except UnicodeError:
                return part.name
    return "?"


def query() -> bottle.FormsDict:
    """The query string's fields as text (400 naming a field that is not UTF-8)."""
    return _text_fields(request.query, "query")


def json_body() -> dict:
    """The request's JSON object ({} for an empty body); 400 saying what is wrong with anything else."""
    raw = request.body.read()
    if not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
    except UnicodeDecodeError as exc:
        byte = raw[exc.start]
        raise bad_request(f"request body is not valid UTF-8 (byte 0x{byte:02x} at offset {exc.start})") from None
    except ValueError as exc:
        raise bad_request(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise bad_request("request body is nested too deeply") from None
    if not isinstance(doc, dict):
        raise bad_request("request body must be a JSON object")
    return doc


def drivers(state: WebState) -> dict:
    """The built-in drivers and those of the current config (which win)."""
    config, _ = state.config()
    extra = (config.raw.get("drivers") or {}) if config else {}
    return {**state.builtin, **(extra if isinstance(extra, dict) else {})}
