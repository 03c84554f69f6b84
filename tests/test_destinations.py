"""Destination regions: bounded, non-personal labels from the E.164 country code of ``To``."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.destinations import NON_GEOGRAPHIC, OTHER, UNKNOWN, RegionCap, known_region, region_of

REGIONS = set(phonenumbers.SUPPORTED_REGIONS) | {NON_GEOGRAPHIC, UNKNOWN}


@pytest.mark.parametrize(
    ("number", "region"),
    [
        ("+918765432109", "IN"),
        ("00918765432109", "IN"),
        ("+91 87654 32109", "IN"),
        ("+1 (415) 555-0123", "US"),
        ("+14165550123", "CA"),  # +1 is shared: the area code decides
        ("+18765550123", "JM"),
        ("+447911123456", "GG"),  # +44 is shared (GB, GG, IM, JE)
        ("+442079460000", "GB"),
        ("+79161234567", "RU"),
        ("+77012345678", "KZ"),
        ("+971501234567", "AE"),
        ("+88213456789", NON_GEOGRAPHIC),
        ("+8816123456789", NON_GEOGRAPHIC),
        ("8765432109", UNKNOWN),  # national format (10 digits): no country code to read
        ("919876543210", "IN"),  # 11-15 bare digits: E.164 without its "+"
        ("14155550123", "US"),
        ("09876543210", UNKNOWN),  # a trunk prefix 0: national
        ("+91", UNKNOWN),
        ("+9187654321098765", UNKNOWN),  # longer than E.164 allows
        ("+0123456789", UNKNOWN),  # no country code starts with 0
        ("sip:alice@example.com", UNKNOWN),
        ("+٩١٨٧٦٥٤٣٢١٠٩", UNKNOWN),  # non-ASCII digits
        ("", UNKNOWN),
        (None, UNKNOWN),
    ],
)
def test_region_of(number: str | None, region: str) -> None:
    assert region_of(number) == region


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=40), st.from_regex(r"\A(\+|00)?[0-9 ()-]{0,20}\Z")))
def test_any_text_maps_to_a_region_code_and_never_to_digits(number: str) -> None:
    region = region_of(number)
    assert region in REGIONS
    assert not any(c.isdigit() for c in region)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS)))
def test_example_numbers_map_to_their_country_code(region: str) -> None:
    example = phonenumbers.example_number(region)
    if example is None:
        return
    text = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
    got = region_of(text)
    # The region shares the number's country calling code (for shared codes libphonenumber's
    # own rules decide; for one-region codes it is that region).
    assert phonenumbers.country_code_for_region(got) == example.country_code
    if len(phonenumbers.COUNTRY_CODE_TO_REGION_CODE[example.country_code]) == 1:
        assert got == region


def test_cap_is_process_wide_and_pinned_regions_stay() -> None:
    cap = RegionCap(3, pinned=frozenset({"JP"}))
    labels = [cap.label(r) for r in ("IN", "US", UNKNOWN, "GB", "AE", "JP", "IN", "SG", OTHER)]
    assert labels == ["IN", "US", UNKNOWN, "GB", OTHER, "JP", "IN", OTHER, OTHER]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(sorted(REGIONS)), max_size=300), st.integers(min_value=1, max_value=20))
def test_cap_bounds_distinct_labels(regions: list[str], cap_size: int) -> None:
    cap = RegionCap(cap_size, pinned=frozenset({"IN", "US"}))
    labels = {cap.label(r) for r in regions}
    assert len(labels - {OTHER, UNKNOWN, "IN", "US"}) <= cap_size


def test_known_region() -> None:
    assert known_region("IN") and known_region(NON_GEOGRAPHIC)
    assert not known_region("QQ") and not known_region("in") and not known_region("001")
