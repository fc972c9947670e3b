"""Files shipped in the package and served as they are: console assets, the API viewer.

Every static router of the node reads through :class:`PackageFiles`, so that a path the
operating system refuses (a NUL byte, a name too long) is "not found" (404), never an
unhandled ``ValueError``/``OSError`` (it was HTTP 500 before authentication).
"""

from __future__ import annotations

from typing import Any

from litestar.file_system import BaseLocalFileSystem
from litestar.types import PathType
from litestar.types.file_types import FileInfo


class PackageFiles(BaseLocalFileSystem):
    """The local file system, where a path the OS cannot even look up does not exist."""

    async def info(self, path: PathType, **kwargs: Any) -> FileInfo:
        if "\x00" in str(path):
            raise FileNotFoundError(str(path).replace("\x00", "\\x00"))
        try:
            return await super().info(path, **kwargs)
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as exc:  # ENAMETOOLONG, ELOOP, embedded NUL...
            raise FileNotFoundError(str(exc)) from None
