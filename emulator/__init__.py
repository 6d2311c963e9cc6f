"""A local Managed Agents API: the subset idlehook uses, webhooks signed like Anthropic's.

`create_emulator(config)` returns the Starlette app; `app.state.emulator` is the `Emulator`
whose methods the routes and the `/_emulator/` control API call.
"""

from emulator.app import create_emulator
from emulator.config import EmulatorConfig
from emulator.core import Emulator

__all__ = ["Emulator", "EmulatorConfig", "create_emulator"]
