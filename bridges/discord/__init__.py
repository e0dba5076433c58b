"""The Discord bridge (discord.py 2.x), registered as the ``discord`` entry point."""

from ._bridge import DiscordBridge, DiscordOptions

__all__ = ["DiscordBridge", "DiscordOptions"]
