"""Great-circle distances between named cities and the fibre propagation floor.

Light in optical fibre travels at about c / 1.47 ≈ 200,000 km/s.  Real routes are longer
than the great circle (cables follow coasts, terrestrial paths zig-zag through exchange
points), so the floor applies a stated route factor, 1.5 by default: a round trip London
-> Singapore (10,880 km) cannot take less than about 2 x 10,880 x 1.5 / 200,000 s ≈ 163 ms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

FIBRE_KM_PER_S: Final = 200_000.0
ROUTE_FACTOR: Final = 1.5
EARTH_RADIUS_KM: Final = 6371.0

#: (latitude, longitude) in degrees of cities that host or serve edge regions.
CITIES: Final[Mapping[str, tuple[float, float]]] = {
    "amsterdam": (52.3676, 4.9041),
    "ashburn": (39.0438, -77.4874),
    "beijing": (39.9042, 116.4074),
    "chicago": (41.8781, -87.6298),
    "dallas": (32.7767, -96.7970),
    "dubai": (25.2048, 55.2708),
    "frankfurt": (50.1109, 8.6821),
    "hong-kong": (22.3193, 114.1694),
    "johannesburg": (-26.2041, 28.0473),
    "london": (51.5074, -0.1278),
    "los-angeles": (34.0522, -118.2437),
    "madrid": (40.4168, -3.7038),
    "mumbai": (19.0760, 72.8777),
    "new-york": (40.7128, -74.0060),
    "paris": (48.8566, 2.3522),
    "san-francisco": (37.7749, -122.4194),
    "sao-paulo": (-23.5505, -46.6333),
    "seoul": (37.5665, 126.9780),
    "shanghai": (31.2304, 121.4737),
    "singapore": (1.3521, 103.8198),
    "stockholm": (59.3293, 18.0686),
    "sydney": (-33.8688, 151.2093),
    "tokyo": (35.6762, 139.6503),
    "toronto": (43.6532, -79.3832),
}

#: Common region labels and the city their traffic is assumed to terminate in.
DEFAULT_REGION_CITIES: Final[Mapping[str, str]] = {
    "eu-west": "london",
    "eu-central": "frankfurt",
    "eu-north": "stockholm",
    "us-east": "ashburn",
    "us-central": "chicago",
    "us-west": "san-francisco",
    "ca-central": "toronto",
    "sa-east": "sao-paulo",
    "ap-southeast": "singapore",
    "ap-northeast": "tokyo",
    "ap-south": "mumbai",
    "ap-east": "hong-kong",
    "au-east": "sydney",
    "me-central": "dubai",
    "af-south": "johannesburg",
    "cn-north": "beijing",
    "cn-east": "shanghai",
}


def city_for(region: str, overrides: Mapping[str, str]) -> str | None:
    """The city a region label stands for: configured, conventional, or the label itself."""
    for candidate in (overrides.get(region), DEFAULT_REGION_CITIES.get(region), region):
        if candidate is not None and candidate.lower() in CITIES:
            return candidate.lower()
    return None


def great_circle_km(a: str, b: str) -> float:
    """Haversine distance between two cities of :data:`CITIES` (KeyError if unknown)."""
    (lat1, lon1), (lat2, lon2) = CITIES[a], CITIES[b]
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(h))


def propagation_floor_rtt_ms(distance_km: float, route_factor: float = ROUTE_FACTOR) -> float:
    """The smallest round-trip time fibre allows over ``distance_km`` (milliseconds)."""
    return 2.0 * distance_km * route_factor / FIBRE_KM_PER_S * 1000.0
