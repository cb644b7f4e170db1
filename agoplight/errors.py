"""The one exception agoplight raises for bad settings, so that the CLI can print it without a traceback."""


class ConfigurationError(ValueError):
    """A setting or input that cannot work; the message names it and says what would."""
