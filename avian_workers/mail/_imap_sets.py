"""UID lists for IMAP commands: checked, de-duplicated, chunked and written as compact sequence sets.

imapclient sends a UID list as-is (`1,2,3,...`) and never splits it, so a long backlog would make
one enormous command line; servers cap line length (Dovecot at 64 KiB). Callers chunk with
`chunked` and send each chunk as `uid_set`, where runs of consecutive UIDs become `first:last`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence


def unique_uids(uids: Iterable[int]) -> list[int]:
    """The UIDs in first-seen order without repeats; anything but a positive integer is refused."""
    seen: set[int] = set()
    ordered: list[int] = []
    for uid in uids:
        if isinstance(uid, bool) or not isinstance(uid, int) or uid < 1:
            raise ValueError(f"IMAP UIDs are positive integers, got {uid!r}")
        if uid not in seen:
            seen.add(uid)
            ordered.append(uid)
    return ordered


def chunked(uids: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    """Consecutive slices of at most `size` UIDs."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    for start in range(0, len(uids), size):
        yield uids[start : start + size]


def uid_set(uids: Iterable[int]) -> str:
    """An IMAP sequence set naming exactly these UIDs, e.g. `3:5,9` for 3, 4, 5 and 9.

    Never uses `*`: `n:*` always matches the highest UID, even one below n.
    """
    ordered = sorted(unique_uids(uids))
    if not ordered:
        raise ValueError("an IMAP sequence set needs at least one UID")
    parts: list[str] = []
    first = last = ordered[0]
    for uid in ordered[1:]:
        if uid == last + 1:
            last = uid
            continue
        parts.append(_uid_range(first, last))
        first = last = uid
    parts.append(_uid_range(first, last))
    return ",".join(parts)


def _uid_range(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}:{last}"
