"""What clients send, parsed (pure, table-tested): WebSocket commands and the positions
and timeouts of the HTTP routes."""

from __future__ import annotations

import pytest

from server.errors import BadRequest, InvalidField
from server.validation import MAX_AFTER, after_value, parse_after, parse_timeout
from server.ws_commands import Auth, Cancel, Generate, Subscribe, parse_client_message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"op":"generate","prompt":"hi"}', Generate({"prompt": "hi"})),
        ('{"op":"subscribe","stream":"s"}', Subscribe("s", -1)),
        ('{"op":"subscribe","stream":"s","after":null}', Subscribe("s", -1)),
        ('{"op":"subscribe","stream":"s","after":12}', Subscribe("s", 12)),
        ('{"op":"cancel","stream":"s"}', Cancel("s")),
        ('{"op":"auth","token":"t"}', Auth("t")),
    ],
)
def test_parse_client_message(text: str, expected: object) -> None:
    assert parse_client_message(text) == expected


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("{", BadRequest, "message is not valid JSON"),
        ('"x"', BadRequest, "message must be a JSON object"),
        ("{}", BadRequest, "op must be one of 'generate', 'subscribe', 'cancel', 'auth'"),
        ('{"op":"cancel","stream":""}', InvalidField, "stream: must be a non-empty string"),
        (
            '{"op":"subscribe","stream":"s","after":-2}',
            InvalidField,
            "after: must be an integer >= -1",
        ),
        (
            '{"op":"subscribe","stream":"s","after":true}',
            InvalidField,
            "after: must be an integer >= -1",
        ),
    ],
)
def test_parse_client_message_errors(text: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        parse_client_message(text)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, -1), ("-1", -1), ("0", 0), ("42", 42), (str(MAX_AFTER), MAX_AFTER)],
)
def test_parse_after(raw: str | None, expected: int) -> None:
    assert parse_after(raw) == expected


@pytest.mark.parametrize(
    "raw", ["", "-2", "+5", " 5", "05", "1_000", "٣", "1.0", str(MAX_AFTER + 1)]
)
def test_parse_after_refuses(raw: str) -> None:
    with pytest.raises(InvalidField) as info:
        parse_after(raw, "Last-Event-ID")
    assert str(info.value) == "Last-Event-ID: must be an integer >= -1"


@pytest.mark.parametrize(
    ("value", "expected"), [(None, -1), (-1, -1), (0, 0), (MAX_AFTER, MAX_AFTER)]
)
def test_after_value(value: object, expected: int) -> None:
    assert after_value(value) == expected


@pytest.mark.parametrize("value", [-2, True, 1.0, "3", MAX_AFTER + 1])
def test_after_value_refuses(value: object) -> None:
    with pytest.raises(InvalidField) as info:
        after_value(value)
    assert str(info.value) == "after: must be an integer >= -1"


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, 25.0), ("0", 0.0), ("1.5", 1.5), ("6e1", 60.0), ("60", 60.0)]
)
def test_parse_timeout(raw: str | None, expected: float) -> None:
    assert parse_timeout(raw, 25.0, 60.0) == expected


@pytest.mark.parametrize("raw", ["", "-1", "60.5", "inf", "nan", "1_0", " 1", "0x10"])
def test_parse_timeout_refuses(raw: str) -> None:
    with pytest.raises(InvalidField) as info:
        parse_timeout(raw, 25.0, 60.0)
    assert str(info.value) == "timeout: must be a number from 0 to 60"
