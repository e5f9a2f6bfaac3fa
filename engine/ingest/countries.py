"""Country name → IANA time zone, for sources (Online Retail) that only record a country.

A country spanning several zones gets its most populous one (USA → America/New_York); names that are
not countries ("Unspecified", "European Community") get the retailer's home zone, Europe/London.
"""

from __future__ import annotations

__all__ = ["COUNTRY_TIME_ZONES", "DEFAULT_TIME_ZONE", "country_time_zone_sql"]

DEFAULT_TIME_ZONE = "Europe/London"

COUNTRY_TIME_ZONES: dict[str, str] = {
    "United Kingdom": "Europe/London", "EIRE": "Europe/Dublin", "Ireland": "Europe/Dublin",
    "Channel Islands": "Europe/Jersey", "Germany": "Europe/Berlin", "France": "Europe/Paris",
    "Spain": "Europe/Madrid", "Netherlands": "Europe/Amsterdam", "Belgium": "Europe/Brussels",
    "Switzerland": "Europe/Zurich", "Portugal": "Europe/Lisbon", "Australia": "Australia/Sydney",
    "Norway": "Europe/Oslo", "Italy": "Europe/Rome", "Finland": "Europe/Helsinki",
    "Cyprus": "Asia/Nicosia", "Sweden": "Europe/Stockholm", "Austria": "Europe/Vienna",
    "Denmark": "Europe/Copenhagen", "Japan": "Asia/Tokyo", "Poland": "Europe/Warsaw",
    "Israel": "Asia/Jerusalem", "USA": "America/New_York", "Hong Kong": "Asia/Hong_Kong",
    "Singapore": "Asia/Singapore", "Iceland": "Atlantic/Reykjavik", "Canada": "America/Toronto",
    "Greece": "Europe/Athens", "Malta": "Europe/Malta", "United Arab Emirates": "Asia/Dubai",
    "RSA": "Africa/Johannesburg", "Lebanon": "Asia/Beirut", "Lithuania": "Europe/Vilnius",
    "Brazil": "America/Sao_Paulo", "Czech Republic": "Europe/Prague", "Bahrain": "Asia/Bahrain",
    "Saudi Arabia": "Asia/Riyadh", "China": "Asia/Shanghai",
}


def country_time_zone_sql(column: str) -> str:
    """A SQL CASE expression mapping a country column to its IANA zone."""
    whens = " ".join(
        f"WHEN {column} = '{name}' THEN '{tz}'" for name, tz in sorted(COUNTRY_TIME_ZONES.items())
    )
    return f"CASE {whens} ELSE '{DEFAULT_TIME_ZONE}' END"
