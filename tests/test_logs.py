"""The daemon's log lines: one line per event in either format, whatever a client sent."""

from __future__ import annotations

import json

import pytest

from engine.logs import RateLimitedLog, setup_logging

# A stream id a producer may send: its rejection is logged with it.
FORGED = "pump-1\n2026-11-27T08:00:00.000Z ERROR   snapshot failed error=disk_full\r\x1b[2K"


@pytest.mark.parametrize("fmt", ["plain", "json"])
def test_a_client_sent_id_cannot_add_lines_or_terminal_codes_to_the_log(capsys, fmt):
    logger = setup_logging(fmt)
    RateLimitedLog(logger).warning("bad_values", "message rejected", stream=FORGED)
    (line,) = capsys.readouterr().err.splitlines()
    assert "\r" not in line and "\x1b" not in line
    if fmt == "json":
        assert json.loads(line)["stream"] == FORGED
    else:
        assert line.endswith(
            " stream=pump-1\\n2026-11-27T08:00:00.000Z ERROR   snapshot failed "
            "error=disk_full\\r\\x1b[2K"
        ), line


def test_a_plain_log_line_keeps_printable_text_as_it_is(capsys):
    logger = setup_logging("plain")
    RateLimitedLog(logger).warning("x", "message rejected", stream="pömp 7", seq=3)
    assert capsys.readouterr().err.rstrip("\n").endswith(" stream=pömp 7 seq=3")
