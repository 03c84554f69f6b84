"""Destination regions: the ISO 3166-1 alpha-2 region of a called number, for per-country metrics.

Wholesale voice is reported per destination country, and spend on countries a trunk never
calls is the classic international revenue share fraud (IRSF) signal. The E.164 country
calling code of ``To`` is a bounded, non-personal dimension (about 250 regions); the number
itself is never kept: this module returns a region code and nothing derived from the digits
beyond the country code.

Cost: ``phonenumbers.parse`` + ``region_code_for_number`` is ~15 µs, a tenth of a whole
request. Most country calling codes belong to one region, so the region is a table lookup on
the 1-3 digit code (E.164 codes are prefix-free); only the dozen codes shared by several
regions (+1 NANP, +7, +44, ...) need libphonenumber's full-number rules.
"""

from __future__ import annotations

import functools
from typing import Any

UNKNOWN = "unknown"
OTHER = "other"
# libphonenumber's region "001" (non-geographic numbering: +800, +808, +870, +881, +882, +883,
# +888, +979 — satellite and international networks, classic IRSF targets) is not an ISO
# 3166-1 code. It is labelled with the ISO 3166-1 user-assigned code XN so that it stays
# visible (and can be allowed) instead of hiding under "unknown".
NON_GEOGRAPHIC = "XN"
_MIN_DIGITS = 7  # +290 (Saint Helena) has 4-digit subscriber numbers: 7 digits in all
_MAX_DIGITS = 15  # E.164 maximum
# Digits without "+" or "00" are read as E.164 only from 11 digits on: national numbers are at
# most 10 digits (India, NANP) or start with a trunk prefix 0 (which no country code does).
_MIN_BARE_DIGITS = 11
_SEPARATORS = str.maketrans("", "", " -().")
_BY_PREFIX: dict[str, str] = {}  # first 3 digits -> region, for one-region country codes only


@functools.cache
def _tables() -> tuple[dict[int, tuple[str, ...]], Any]:
    """libphonenumber's country-code table, loaded on first use (only with destinations on)."""
    import phonenumbers

    return phonenumbers.COUNTRY_CODE_TO_REGION_CODE, phonenumbers


def known_region(code: str) -> bool:
    """Whether ``code`` is a region a number can map to (for validating ``allowed`` lists)."""
    import phonenumbers

    return code == NON_GEOGRAPHIC or code in phonenumbers.SUPPORTED_REGIONS


def _label(region: str | None) -> str:
    if region is None or region == "ZZ":
        return UNKNOWN
    return NON_GEOGRAPHIC if region == "001" else region


def region_of(number: str | None) -> str:
    """The region of an E.164 number (``+`` or ``00`` then 7-15 digits, or 11-15 bare digits
    not starting with 0), else ``unknown``. Shorter bare numbers are ``unknown``: a national
    format cannot be told apart from a country code without knowing the caller's country."""
    if not number:
        return UNKNOWN
    text = number.strip().translate(_SEPARATORS)
    if text.startswith("+"):
        digits = text[1:]
    elif text.startswith("00"):
        digits = text[2:]
    elif len(text) >= _MIN_BARE_DIGITS:
        digits = text  # E.164 without its "+": national formats are shorter or start with 0
    else:
        return UNKNOWN
    if (
        not (_MIN_DIGITS <= len(digits) <= _MAX_DIGITS)
        or not digits.isascii()
        or not digits.isdigit()
        or digits[0] == "0"
    ):  # no country code starts with 0 (and int("01") would read +1)
        return UNKNOWN
    region = _BY_PREFIX.get(digits[:3])
    if region is not None:
        return region
    table, phonenumbers = _tables()
    for size in (1, 2, 3):
        regions = table.get(int(digits[:size]))
        if regions is None:
            continue
        if len(regions) == 1:
            # The first three digits hold the whole country code (E.164 codes are prefix-free and
            # at most 3 digits), so they decide a one-region code: at most 1,000 entries.
            region = _BY_PREFIX[digits[:3]] = _label(regions[0])
            return region
        try:
            parsed = phonenumbers.parse("+" + digits, None)
        except phonenumbers.NumberParseException:
            return _label(regions[0])
        # A number no region's rules accept still has a readable country code: its main region.
        return _label(phonenumbers.region_code_for_number(parsed) or regions[0])
    return UNKNOWN


class RegionCap:
    """Process-wide bound on distinct region labels: beyond ``max_countries``, new ones are
    ``other``. Regions named in an ``allowed`` list always keep their own label and do not
    count toward the cap (as budget currencies do for the currency cap)."""

    def __init__(self, max_countries: int, pinned: frozenset[str] = frozenset()) -> None:
        self.max_countries = max_countries
        self.pinned = pinned
        self._seen: set[str] = set()

    def label(self, region: str) -> str:
        if region in self.pinned or region in self._seen or region in (UNKNOWN, OTHER):
            return region
        if len(self._seen - self.pinned) < self.max_countries:
            self._seen.add(region)
            return region
        return OTHER
