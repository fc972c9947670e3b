"""Peer servers the benchmark measures relaydesk against."""
