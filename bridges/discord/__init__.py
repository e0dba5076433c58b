"""The Discord bridge (discord.py 2.x), registered as the ``discord`` entry point."""

from ._bridge import DiscordBridge
from ._options import DiscordOptions

__all__ = ["DiscordBridge", "DiscordOptions"]
