"""Every `lookalike` command with bad input, run as the operator runs it (a subprocess): never a traceback.

Bad arguments: argparse's usage line, exit 2. An unreachable --url (a closed loopback port), an answer that
is not JSON (a loopback server answering text/html) or a service's error answer (a real `python -m app`):
one line on stderr saying what went wrong and what to do, exit 1.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.factories import photo
from tests.live import ROOT, free_port, live_server

KEY = "cli-errors-key"


class _HtmlHandler(BaseHTTPRequestHandler):
    """Answers every request with a web page: what a wrong --url (a proxy, another site) gives."""

    def _page(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"<html><body>not the service you are looking for</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _page

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def urls(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """{closed}: nothing listens; {html}: a web page; {live}: the service (write key KEY, one item `a`)."""
    html = ThreadingHTTPServer(("127.0.0.1", 0), _HtmlHandler)
    threading.Thread(target=html.serve_forever, daemon=True).start()
    env = {
        "LOOKALIKE_MODEL_PATH": str(tiny_model_path),
        "LOOKALIKE_QDRANT_PATH": str(tmp_path_factory.mktemp("cli-errors") / "q"),
        "LOOKALIKE_API_KEY": KEY,
    }
    try:
        with live_server(env) as server:
            item = {"item_id": "a", "image_base64": base64.b64encode(photo(1)).decode()}
            auth = {"Authorization": f"Bearer {KEY}"}
            assert httpx.post(server.url + "/items", json=item, headers=auth, timeout=60).status_code == 201
            closed = f"http://127.0.0.1:{free_port()}"
            yield {"closed": closed, "html": f"http://127.0.0.1:{html.server_port}", "live": server.url}
    finally:
        html.shutdown()


@pytest.fixture(scope="module")
def jsonl(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("cli-errors-items") / "items.jsonl"
    path.write_text(json.dumps({"item_id": "x1", "image": "https://example.invalid/x1.jpg"}) + "\n")
    return str(path)


def run_cli(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *argv], cwd=ROOT, env=full, capture_output=True, text=True, timeout=120
    )


# (argv, what the error line says). {file}: a valid JSONL file.
USAGE = [
    ([], "the following arguments are required: command"),
    (["serve", "--bogus"], "unrecognized arguments: --bogus"),
    (["index", "/no/such/items.jsonl"], "no such file"),
    (["index", "{file}", "--batch-size", "0"], "must be 1..256"),
    (["index", "{file}", "--url", "ftp://host"], "not an http(s)://host[:port] address"),
    (["similar", "a", "--k", "0"], "greater than or equal to 1"),
    (["similar", "a", "--k", "101"], "less than or equal to 100"),
    (["similar", "a", "--k", "ten"], "valid integer"),
    (["similar", "bad id"], "argument item_id"),
    (["similar", "a", "--url", "http://127.0.0.1:99999"], "argument --url"),
    (["demo", "--items", "3"], "must be at least 8"),
    (["demo", "--port", "70000"], "must be 1..65535"),
    (["models"], "the following arguments are required: models_command"),
    (["models", "list", "--bogus"], "unrecognized arguments: --bogus"),
    (["models", "promote"], "the following arguments are required: version"),
    (["models", "retire"], "the following arguments are required: version"),
    (["models", "backfill", "v2", "--partition", "²/3"], "must be I/N"),
    (["models", "backfill", "v2", "--partition", "3/3"], "partition must be I/N with 0 <= I < N"),
    (["models", "backfill", "v2", "--poll-s", "0"], "must be a positive number"),
    (["models", "compare", "v1"], "the following arguments are required: v2"),
    (["models", "compare", "v1", "v2", "--sample", "0"], "must be at least 1"),
    (["models", "compare", "v1", "v2", "--k", "0"], "greater than or equal to 1"),
    (["experiments"], "the following arguments are required: experiments_command"),
    (["experiments", "report"], "the following arguments are required: name"),
    (["experiments", "report", "x", "--format", "pdf"], "invalid choice: 'pdf'"),
    (["experiments", "import", "/no/such/clicks.csv"], "no such file"),
    (["images"], "the following arguments are required: images_command"),
    (["images", "orphans", "--delete=yes"], "ignored explicit argument"),
]

# Every command that takes --url: {url} is the closed port, the web page or the live service.
REMOTE = [
    ["index", "{file}", "--url", "{url}"],
    ["similar", "a", "--url", "{url}"],
    ["models", "list", "--url", "{url}"],
    ["models", "promote", "v9", "--url", "{url}"],
    ["models", "retire", "v9", "--url", "{url}"],
    ["models", "backfill", "v9", "--url", "{url}"],
    ["models", "compare", "v1", "v9", "--url", "{url}"],
    ["experiments", "list", "--url", "{url}"],
    ["experiments", "report", "nope", "--url", "{url}"],
    ["experiments", "report", "nope", "--url", "{url}", "--format", "json"],
]

# The live service's error answers (the key is KEY; without it writes get 401).
HTTP_ERRORS = [
    (["index", "{file}", "--url", "{url}"], "401 unauthorized"),
    (["index", "{file}", "--url", "{url}", "--api-key", "wrong"], "401 unauthorized"),
    (["similar", "nope", "--url", "{url}"], "404 item_not_found"),
    (["similar", "a", "--url", "{url}", "--model-version", "v9"], "404 model_not_found"),
    (["models", "promote", "v9", "--url", "{url}"], "401 unauthorized"),
    (["models", "promote", "v9", "--url", "{url}", "--api-key", KEY], "404 model_not_found"),
    (["models", "retire", "v9", "--url", "{url}", "--api-key", KEY], "404 model_not_found"),
    (["models", "backfill", "v9", "--url", "{url}", "--api-key", KEY], "404 model_not_found"),
    (["models", "compare", "v1", "v9", "--url", "{url}"], "404 model_not_found"),
    (["experiments", "report", "nope", "--url", "{url}", "--api-key", KEY], "404 experiment_not_found"),
]

# In-process, with a model file that does not exist: the service cannot start.
IN_PROCESS = [
    ["index", "{file}"],
    ["similar", "a"],
    ["models", "list"],
    ["models", "promote", "v9"],
    ["models", "retire", "v9"],
    ["models", "backfill", "v9"],
    ["models", "compare", "v1", "v9"],
    ["experiments", "list"],
    ["experiments", "report", "nope"],
    ["images", "orphans"],
]


def case_id(argv: list[str]) -> str:
    return " ".join(a for a in argv if a not in ("{file}", "--url", "{url}")) or "(none)"


def fill(argv: list[str], **values: str) -> list[str]:
    return [arg.format(**values) for arg in argv]


def assert_one_line(result: subprocess.CompletedProcess[str], says: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("lookalike: ") and says in lines[0], lines[0]


@pytest.mark.parametrize(("argv", "says"), USAGE, ids=[case_id(a) for a, _ in USAGE])
def test_bad_arguments_get_the_usage_line_and_exit_2(argv: list[str], says: str, jsonl: str) -> None:
    result = run_cli(fill(argv, file=jsonl))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("usage: lookalike")
    assert lines[-1].startswith("lookalike") and ": error: " in lines[-1] and says in lines[-1], lines[-1]
    assert result.stdout == ""


@pytest.mark.parametrize("argv", REMOTE, ids=[case_id(a) for a in REMOTE])
def test_an_unreachable_service_is_one_line(argv: list[str], urls: dict[str, str], jsonl: str) -> None:
    result = run_cli(fill(argv, file=jsonl, url=urls["closed"]))
    assert_one_line(result, f"no answer from {urls['closed']}")
    assert "check --url" in result.stderr


@pytest.mark.parametrize("argv", REMOTE, ids=[case_id(a) for a in REMOTE])
def test_an_answer_that_is_not_json_is_one_line(argv: list[str], urls: dict[str, str], jsonl: str) -> None:
    result = run_cli(fill(argv, file=jsonl, url=urls["html"]))
    assert_one_line(result, "answered 200 with text/html, not ")
    assert "does --url name a lookalike service?" in result.stderr


@pytest.mark.parametrize(("argv", "says"), HTTP_ERRORS, ids=[case_id(a) for a, _ in HTTP_ERRORS])
def test_an_error_answer_is_one_line(argv: list[str], says: str, urls: dict[str, str], jsonl: str) -> None:
    result = run_cli(fill(argv, file=jsonl, url=urls["live"]))
    assert_one_line(result, says)
    if says.startswith("401"):
        assert "pass the service's key with --api-key" in result.stderr


@pytest.mark.parametrize("argv", IN_PROCESS, ids=[case_id(a) for a in IN_PROCESS])
def test_a_service_that_cannot_start_in_process_is_one_line(argv: list[str], tmp_path: Path, jsonl: str) -> None:
    missing = tmp_path / "missing.onnx"
    env = {"LOOKALIKE_MODEL_PATH": str(missing), "LOOKALIKE_QDRANT_PATH": str(tmp_path / "q")}
    result = run_cli(fill(argv, file=jsonl), env)
    assert_one_line(result, f"model file {missing} does not exist")
