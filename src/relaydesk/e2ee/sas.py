"""Device verification by short authentication string (vodozemac's SAS).

Two devices exchange ephemeral Curve25519 keys (over any channel: the SDK uses the
users' direct conversation), derive the same six bytes, and show them to their people
as seven emoji or three four-digit numbers; if the people agree, each device sends a
MAC of its signing key under the shared secret and marks the other verified when the
MAC checks.  A man in the middle would have to make both sides show the same string
without knowing it in advance.  The info strings bind both device identities, in the
initiator's order, as Matrix does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import vodozemac as vz

from relaydesk.e2ee.wire import DeviceIdentity

#: The 64 emoji of the Matrix SAS table (index -> (emoji, name)).
EMOJI: Final = (
    ("🐶", "Dog"),
    ("🐱", "Cat"),
    ("🦁", "Lion"),
    ("🐎", "Horse"),
    ("🦄", "Unicorn"),
    ("🐷", "Pig"),
    ("🐘", "Elephant"),
    ("🐰", "Rabbit"),
    ("🐼", "Panda"),
    ("🐓", "Rooster"),
    ("🐧", "Penguin"),
    ("🐢", "Turtle"),
    ("🐟", "Fish"),
    ("🐙", "Octopus"),
    ("🦋", "Butterfly"),
    ("🌷", "Flower"),
    ("🌳", "Tree"),
    ("🌵", "Cactus"),
    ("🍄", "Mushroom"),
    ("🌏", "Globe"),
    ("🌙", "Moon"),
    ("☁️", "Cloud"),
    ("🔥", "Fire"),
    ("🍌", "Banana"),
    ("🍎", "Apple"),
    ("🍓", "Strawberry"),
    ("🌽", "Corn"),
    ("🍕", "Pizza"),
    ("🎂", "Cake"),
    ("❤️", "Heart"),
    ("😀", "Smiley"),
    ("🤖", "Robot"),
    ("🎩", "Hat"),
    ("👓", "Glasses"),
    ("🔧", "Spanner"),
    ("🎅", "Santa"),
    ("👍", "Thumbs Up"),
    ("☂️", "Umbrella"),
    ("⌛", "Hourglass"),
    ("⏰", "Clock"),
    ("🎁", "Gift"),
    ("💡", "Light Bulb"),
    ("📕", "Book"),
    ("✏️", "Pencil"),
    ("📎", "Paperclip"),
    ("✂️", "Scissors"),
    ("🔒", "Lock"),
    ("🔑", "Key"),
    ("🔨", "Hammer"),
    ("☎️", "Telephone"),
    ("🏁", "Flag"),
    ("🚂", "Train"),
    ("🚲", "Bicycle"),
    ("✈️", "Aeroplane"),
    ("🚀", "Rocket"),
    ("🏆", "Trophy"),
    ("⚽", "Ball"),
    ("🎸", "Guitar"),
    ("🎺", "Trumpet"),
    ("🔔", "Bell"),
    ("⚓", "Anchor"),
    ("🎧", "Headphones"),
    ("📁", "Folder"),
    ("📌", "Pin"),
)


class VerificationFailed(Exception):
    """The other side's MAC does not match: do not mark the device verified."""


@dataclass(frozen=True, slots=True)
class ShortCode:
    emoji: tuple[tuple[str, str], ...]
    decimals: tuple[int, int, int]


class SasVerification:
    """One side of a verification between ``me`` and ``them``."""

    def __init__(self, me: DeviceIdentity, them: DeviceIdentity, *, initiator: bool) -> None:
        self.me, self.them = me, them
        first, second = (me, them) if initiator else (them, me)
        self._info = (
            f"RD_SAS_V1|{first.user}|{first.device}|{first.signing_key}"
            f"|{second.user}|{second.device}|{second.signing_key}"
        )
        self._sas: vz.Sas | None = vz.Sas()
        self.public_key: str = self._sas.public_key.to_base64()
        self._established: vz.EstablishedSas | None = None

    def receive_key(self, their_public_key: str) -> ShortCode:
        """Take the other side's ephemeral key; the code to show the person."""
        if self._sas is None:
            raise VerificationFailed("the other side's key was already taken")
        try:
            self._established = self._sas.diffie_hellman(
                vz.Curve25519PublicKey.from_base64(their_public_key)
            )
        except (vz.SasException, vz.KeyException, vz.DecodeException) as exc:
            raise VerificationFailed(f"bad SAS key: {exc}") from None
        self._sas = None
        raw = self._established.bytes(self._info)
        d1, d2, d3 = raw.decimals
        return ShortCode(tuple(EMOJI[i] for i in raw.emoji_indices), (d1, d2, d3))

    def mac(self) -> str:
        """Send after the person confirmed the codes match: a MAC of our signing key."""
        return str(
            self._need().calculate_mac(self.me.signing_key, self._info + "|MAC|" + self.me.device)
        )

    def verify(self, their_mac: str) -> None:
        """Check the other side's MAC over their signing key; raise if it fails."""
        try:
            self._need().verify_mac(
                self.them.signing_key, self._info + "|MAC|" + self.them.device, their_mac
            )
        except vz.SasException as exc:
            raise VerificationFailed(f"the MAC does not match: {exc}") from None

    def _need(self) -> vz.EstablishedSas:
        if self._established is None:
            raise VerificationFailed("no key exchanged yet")
        return self._established
