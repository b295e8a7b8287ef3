"""Whatever bytes arrive, the parser returns a result or its own error, and does so quickly.

`deadline` fails any single call slower than the bound: a pathological regex or a quadratic
loop shows up here as a deadline error, not as a hung worker.
"""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avian_workers.mail.parse import MailParseError, ParsedMail, parse_alert_email
from tests.avian_workers.mail.emails import all_real_emails

REAL_EMAILS = tuple(all_real_emails().values())

FUZZ = settings(
    max_examples=300,
    deadline=timedelta(milliseconds=500),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def parse_or_refusal(raw: bytes) -> ParsedMail | MailParseError:
    try:
        return parse_alert_email(raw)
    except MailParseError as error:
        return error


def parses_or_refuses(raw: bytes) -> None:
    """Any other exception propagates and fails the test."""
    outcome = parse_or_refusal(raw)
    if isinstance(outcome, MailParseError):
        assert str(outcome), "a parse error must say why"
        return
    assert isinstance(outcome, ParsedMail)
    for alert in outcome.alerts:
        assert alert.occurred_at is None or alert.occurred_at.utcoffset() == timedelta(0)


@st.composite
def mutated_emails(draw: st.DrawFn) -> bytes:
    """A real email with a few byte flips, truncations, insertions, deletions or duplications."""
    data = bytearray(draw(st.sampled_from(REAL_EMAILS)))
    for _ in range(draw(st.integers(min_value=1, max_value=8))):
        position = draw(st.integers(min_value=0, max_value=len(data)))
        operation = draw(st.sampled_from(("flip", "truncate", "insert", "delete", "duplicate")))
        if operation == "flip" and position < len(data):
            data[position] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif operation == "truncate":
            del data[position:]
        elif operation == "insert":
            data[position:position] = draw(
                st.one_of(
                    st.binary(min_size=1, max_size=64),
                    st.sampled_from(
                        (
                            b"\r\n",
                            b"\n\n",
                            b"=",
                            b'"',
                            b":",
                            b"=?utf-8?b?",
                            b"?=",
                            b"<td>",
                            b"<![if ",
                            b"--",
                            b"Content-Type: multipart/mixed; boundary=x\n",
                            b"Content-Transfer-Encoding: base64\n",
                            b"\x00",
                            b"\xff\xfe",
                        )
                    ),
                )
            )
        elif operation == "delete":
            del data[position : position + draw(st.integers(min_value=1, max_value=64))]
        elif operation == "duplicate":
            chunk = bytes(data[position : position + draw(st.integers(min_value=1, max_value=256))])
            data[position:position] = chunk * draw(st.integers(min_value=1, max_value=20))
    return bytes(data)


# Bodies built from the characters the parser's patterns care about, in long runs, to look for
# inputs that make a pattern backtrack.
_TRICKY_TOKENS = (
    *'= ":/-.,<>\n\tabcAZ019',
    "sn=", 'msg="', "pri=", "time=", "VPN ", "down ", "CPU ", "License ", "expir", "<td>", "</tr>",
    "Serial Number: ", "2025-01-09 10:11:12 ", "UTC", "01/09/2025 ", "PM ",
    "<![", "]>", "<!", "<!--", "-->", "<pre>", "<script>", "<br>", "&quot;", "&#",
)  # fmt: skip
_TRICKY = st.lists(st.sampled_from(_TRICKY_TOKENS), max_size=1500).map("".join)


@FUZZ
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_parse_or_raise_mail_parse_error(raw: bytes) -> None:
    parses_or_refuses(raw)


@FUZZ
@given(mutated_emails())
def test_mutated_real_emails_parse_or_raise_mail_parse_error(raw: bytes) -> None:
    parses_or_refuses(raw)


@FUZZ
@given(
    subject=_TRICKY,
    body=_TRICKY,
    content_type=st.sampled_from(("text/plain", "text/html")),
)
def test_adversarial_bodies_parse_within_the_deadline(
    subject: str, body: str, content_type: str
) -> None:
    header = f"Subject: {subject[:200]}\nContent-Type: {content_type}; charset=utf-8\n\n"
    parses_or_refuses(header.encode() + body.encode())


@settings(FUZZ, max_examples=12)
@given(
    unclosed=st.sampled_from(("<a x", "<a", "<!--", "</a", "<a\t", "<!x", "<a='", "<![CDATA[x]>")),
    repeats=st.integers(min_value=20_000, max_value=50_000),
)
def test_html_of_unclosed_tags_parses_within_the_deadline(unclosed: str, repeats: int) -> None:
    # html.parser before CPython 3.12.11 is quadratic here: 20,000 "<a x" took 56 s, 20,000
    # "<![CDATA[x]>" 4.6 s.
    header = "Subject: alert\nContent-Type: text/html; charset=utf-8\n\n"
    parses_or_refuses(header.encode() + (unclosed * repeats).encode())
