"""Errors users see: each one says what went wrong and how to fix it."""


class DSAHError(Exception):
    """Base class for errors that carry a message meant for the user."""


class ConfigError(DSAHError):
    """params.yaml (or an override) holds an unknown key, a wrong type or a value out of range."""


class DataError(DSAHError):
    """Source data is missing, corrupt, truncated or does not match its checksum."""
