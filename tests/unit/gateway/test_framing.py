"""Bodies refused before the app runs, and gunicorn's own refusals in JSON."""

from __future__ import annotations

import json

import h11
import pytest

from gateway.framing import over_limit, unsupported_coding
from gateway.servers.error_pages import json_error


@pytest.mark.parametrize(
    ("content_length", "limit", "refused"),
    [
        pytest.param("100", 100, False, id="at-the-limit"),
        pytest.param("101", 100, True, id="one-over"),
        pytest.param(None, 100, False, id="no-body"),
        pytest.param("", 100, False, id="empty"),
        pytest.param("12x", 100, False, id="invalid-left-to-the-server"),
        pytest.param("99999999999999999999", 100, True, id="huge"),
        pytest.param("101", None, False, id="no-limit"),
    ],
)
def test_over_limit(content_length: str | None, limit: int | None, refused: bool) -> None:
    message = over_limit(content_length, limit)
    assert (message is not None) is refused
    if message:
        assert str(limit) in message


@pytest.mark.parametrize(
    ("value", "refused"),
    [
        pytest.param(None, False, id="none"),
        pytest.param("chunked", False, id="chunked"),
        pytest.param("Chunked", False, id="case-insensitive"),
        pytest.param("gzip, chunked", True, id="9112-6.1-gzip-chunked"),
        pytest.param("gzip", True, id="gzip"),
        pytest.param("chunked, chunked", True, id="chunked-twice"),
    ],
)
def test_unsupported_coding(value: str | None, refused: bool) -> None:
    assert (unsupported_coding(value) is not None) is refused


def test_json_error_is_a_whole_http_response() -> None:
    raw = json_error(431, "too many headers")
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(raw)
    response = client.next_event()
    assert isinstance(response, h11.Response) and response.status_code == 431
    headers = {k.decode(): v.decode() for k, v in response.headers}
    assert headers["connection"] == "close"
    assert headers["content-type"] == "application/json"
    body = client.next_event()
    assert isinstance(body, h11.Data)
    assert json.loads(body.data) == {
        "error": "request header fields too large: too many headers",
        "status": 431,
    }


@pytest.mark.parametrize(
    ("content_length", "limit"),
    [
        pytest.param("1\u00b2", 1, id="superscript-two"),
        pytest.param("\u0661\u0662", 1, id="arabic-indic-twelve"),
    ],
)
def test_over_limit_takes_ascii_digits_only(content_length: str, limit: int) -> None:
    # RFC 9110 §8.6: Content-Length = 1*DIGIT, and DIGIT is %x30-39 (RFC 5234
    # B.1). str.isdigit() is true for both values; int() raised (²) or read 12.
    assert over_limit(content_length, limit) is None


def test_the_asyncio_worker_takes_the_lab_s_reason_phrases() -> None:
    # gunicorn's asyncio worker has a phrase table of its own ("Payload Too
    # Large", "Unknown" for 431); the WSGI modes send the app's phrase.
    from gunicorn.asgi import protocol

    from gateway.errors import reason
    from gateway.servers.error_pages import install_json_error_pages

    install_json_error_pages()
    for status in (400, 408, 413, 414, 431, 501, 503):
        assert protocol._REASON_PHRASES[status] == reason(status)
