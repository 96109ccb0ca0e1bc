"""The one HTTP client of the commands that take --url, and how an answer that is not the expected one is told.

Every failure here becomes a `CommandError` whose message is one line: what went wrong and what to do.
"""

from __future__ import annotations

from typing import Any

import httpx

# Connect fast (an unreachable --url is told at once); read long: an experiment report scans the event log,
# a batch of 256 images is fetched and encoded before POST /items/batch answers.
TIMEOUT = httpx.Timeout(300.0, connect=5.0)


class CommandError(RuntimeError):
    """A command cannot go on; the message is one line saying what went wrong and what to do."""


def http_client(url: str, api_key: str | None = None) -> httpx.AsyncClient:
    """An async client of the service at `url`, with the bearer key when given."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.AsyncClient(base_url=url, headers=headers, timeout=TIMEOUT)


def unreachable(url: str, exc: httpx.HTTPError) -> CommandError:
    """The transport failed (refused, timed out, bad URL): no answer at all."""
    reason = str(exc) or type(exc).__name__
    return CommandError(f"no answer from {url} ({reason}): is the service running there? check --url")


def answer_json(response: httpx.Response) -> Any:
    """The answer's JSON body; CommandError when it is not JSON (--url names something else than lookalike)."""
    try:
        return response.json()
    except ValueError:
        raise _not_lookalike(response, "JSON") from None


def answer_text(response: httpx.Response, media_type: str) -> str:
    """The answer's text when its content type is `media_type` (a report's table or page); CommandError otherwise."""
    if response.headers.get("content-type", "").split(";")[0].strip() != media_type:
        raise _not_lookalike(response, media_type)
    return response.text


def _not_lookalike(response: httpx.Response, wanted: str) -> CommandError:
    kind = response.headers.get("content-type", "no content type").split(";")[0]
    return CommandError(
        f"{response.request.method} {response.request.url} answered {response.status_code} with {kind}, "
        f"not {wanted}: does --url name a lookalike service?"
    )


def error_code(response: httpx.Response) -> str | None:
    """The error code of a lookalike error answer (None when the body is not one)."""
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error.get("code") if isinstance(error, dict) else None


def error_line(response: httpx.Response) -> str:
    """One line for an error answer: status, code, the service's message, and what to do."""
    body = answer_json(response)  # not JSON: CommandError says so
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return f"{response.status_code} from {response.request.url}: {_hint(response.status_code)}"
    return f"{response.status_code} {error.get('code')}: {error.get('message')}{_hint_suffix(response.status_code)}"


def expect(response: httpx.Response, status: int) -> Any:
    """The JSON body of an answer with `status`; CommandError with one line otherwise."""
    if response.status_code != status:
        raise CommandError(error_line(response))
    return answer_json(response)


def _hint(status: int) -> str:
    if status in (401, 403):
        return "pass the service's key with --api-key"
    if status == 404:
        return "check the name or id, and that --url is the service's base address"
    if status in (429, 503):
        return "the service is busy or not ready: retry in a moment"
    if status >= 500:
        return "the service failed: see its log"
    return "see the message above"


def _hint_suffix(status: int) -> str:
    return f" ({_hint(status)})" if status in (401, 403, 429, 503) or status >= 500 else ""
