"""UID lists as IMAP commands need them: unique, chunked, compact, never open-ended."""

import pytest

from avian_workers.mail._imap_sets import chunked, uid_set, unique_uids


def test_uid_set_writes_runs_as_ranges_in_ascending_order() -> None:
    assert uid_set([9, 3, 4, 5, 11, 12, 7]) == "3:5,7,9,11:12"


def test_uid_set_of_one_uid_is_that_uid() -> None:
    assert uid_set([42]) == "42"


def test_uid_set_never_uses_a_star() -> None:
    assert "*" not in uid_set(range(1, 10_000, 2))


def test_uid_set_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one UID"):
        uid_set([])


def test_unique_uids_keeps_first_seen_order() -> None:
    assert unique_uids([5, 1, 5, 3, 1]) == [5, 1, 3]


@pytest.mark.parametrize("bad", [0, -1, True, "7", 1.0])
def test_unique_uids_refuses_anything_but_positive_integers(bad: object) -> None:
    with pytest.raises(ValueError, match="positive integers"):
        unique_uids([1, bad])  # type: ignore[list-item]


def test_chunked_splits_into_slices_of_at_most_the_size() -> None:
    assert [list(c) for c in chunked([1, 2, 3, 4, 5, 6, 7], 3)] == [[1, 2, 3], [4, 5, 6], [7]]


def test_chunked_refuses_a_size_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        list(chunked([1], 0))
