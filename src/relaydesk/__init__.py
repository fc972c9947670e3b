"""relaydesk: self-hosted real-time messaging with a Python SDK and a support desk.

The SDK entry points are re-exported here: ``relaydesk.connect`` and
``relaydesk.Client`` (see ``relaydesk.client`` for the rest of the public API).
"""

from relaydesk.client import Client, connect

__version__ = "0.1.0"

__all__ = ["Client", "__version__", "connect"]
