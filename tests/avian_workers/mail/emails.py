"""Sample mail for the parser tests: the shared seed emails, our fixtures, and a mail builder."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

# A copy of the platform's sixteen sample emails (CONTRACT.md), kept with the tests.
SEED_DIR = Path(__file__).parents[2] / "fixtures" / "seed-emails"
FIXTURE_DIR = Path(__file__).parents[2] / "fixtures" / "emails"

DEFAULT_DATE = "Thu, 09 Jan 2025 10:00:00 +0000"


def seed(name: str) -> bytes:
    return (SEED_DIR / name).read_bytes()


def fixture(name: str) -> bytes:
    return (FIXTURE_DIR / name).read_bytes()


def all_real_emails() -> dict[str, bytes]:
    """Every seed and fixture email by file name."""
    return {
        path.name: path.read_bytes()
        for directory in (SEED_DIR, FIXTURE_DIR)
        for path in sorted(directory.glob("*.eml"))
    }


def make_mail(
    body: str = "",
    *,
    subject: str | None = "SonicWall Alert",
    date: str | None = DEFAULT_DATE,
    message_id: str | None = "<test@sonicwall.example.com>",
    content_type: str = "text/plain; charset=utf-8",
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """A single-part mail with the given body (utf-8) and headers; None leaves a header out."""
    lines = ["From: alerts@sonicwall.example.com", "To: security@avian.example.com"]
    for name, value in (("Subject", subject), ("Date", date), ("Message-ID", message_id)):
        if value is not None:
            lines.append(f"{name}: {value}")
    lines.append("MIME-Version: 1.0")
    lines.append(f"Content-Type: {content_type}")
    lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
    return ("\n".join(lines) + "\n\n" + body).encode("utf-8")
