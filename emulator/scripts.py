"""Scripts: which outcome a scripted agent turn heads for, as a list of steps. Pure.

Chosen by session metadata `emulator_script`, else a `#script:NAME` token in the user message,
else the configured default. Names: `end_turn`, `tools` (a tool that runs unasked),
`requires_action` (a tool needing confirmation), `custom_tools:N` (N custom tool calls,
one round trip each), `requires_action:N` (N confirmations awaited together), `mixed_action`
(a confirmation and a custom tool, awaited together), `retries_exhausted`, `budget_reached`
(a forced budget pause, budget or not), `refusal` (a message, then idle with stop_reason
`refusal` and refusal stop_details), `terminate`, `reschedule` (a transient error, then done),
`files:N` (the session produces N files), `long:N` (N agent messages).

Each `Say` is one model request: it spends tokens (and list cost), so a session with a budget
pauses after the `Say` that reaches its cap.
"""

import re
from dataclasses import dataclass

from emulator.errors import BadRequest


@dataclass(frozen=True)
class Say:
    text: str


@dataclass(frozen=True)
class UseTool:
    name: str
    ask: bool  # evaluated_permission "ask": the turn blocks on a user.tool_confirmation


@dataclass(frozen=True)
class UseCustomTool:
    name: str


@dataclass(frozen=True)
class Fail:
    retry_status: str  # "exhausted" -> idle retries_exhausted; "terminal" -> terminated


@dataclass(frozen=True)
class Reschedule:
    """A transient error: session.error (retrying), `rescheduling`, then running again."""


@dataclass(frozen=True)
class ReachBudget:
    pass


@dataclass(frozen=True)
class ProduceFile:
    filename: str


@dataclass(frozen=True)
class Refuse:
    """The model's response is refused: the turn ends idle with stop_reason `refusal`."""

    category: str | None
    explanation: str | None


Step = Say | UseTool | UseCustomTool | Fail | Reschedule | ReachBudget | ProduceFile | Refuse

_TOKEN = re.compile(r"#script:([A-Za-z_]+(?::\d+)?)")
MAX_REPEAT = 50


def script_token(text: str) -> str | None:
    match = _TOKEN.search(text)
    return match.group(1) if match else None


def _count(name: str, arg: str | None, default: int) -> int:
    if arg is None:
        return default
    count = int(arg)
    if not 1 <= count <= MAX_REPEAT:
        raise BadRequest(f"emulator script {name}: count must be 1..{MAX_REPEAT}")
    return count


def steps_for(script: str) -> list[Step]:
    name, _, arg = script.partition(":")
    if arg and not arg.isdigit():
        raise BadRequest(f"unknown emulator script: {script!r}")
    n = arg or None
    if name == "end_turn":
        return [Say("Done.")]
    if name == "long":
        return [Say(f"Part {i + 1}.") for i in range(_count(name, n, 3))]
    if name == "tools":
        return [Say("Let me look."), UseTool("bash", ask=False), Say("Done.")]
    if name == "requires_action":
        tools: list[Step] = [UseTool("bash", ask=True) for _ in range(_count(name, n, 1))]
        return [Say("I need to run a command."), *tools, Say("Done.")]
    if name == "custom_tools":
        # One call per round trip: each blocks the session on its own.
        steps: list[Step] = []
        for i in range(_count(name, n, 1)):
            steps += [Say(f"Calling tool {i + 1}."), UseCustomTool("lookup")]
        return [*steps, Say("Done.")]
    if name == "mixed_action":
        return [
            Say("Two things."),
            UseTool("bash", ask=True),
            UseCustomTool("lookup"),
            Say("Done."),
        ]
    if name == "retries_exhausted":
        return [Say("Working."), Fail("exhausted")]
    if name == "budget_reached":
        return [Say("Working."), ReachBudget()]
    if name == "refusal":
        return [
            Say("Let me think about that."),
            Refuse("general_harms", "Scripted refusal: the request falls under general harms."),
        ]
    if name == "reschedule":
        return [Say("Working."), Reschedule(), Say("Done.")]
    if name == "terminate":
        return [Say("Working."), Fail("terminal")]
    if name == "files":
        count = _count(name, n, 1)
        return [
            Say("Writing files."),
            *[ProduceFile(f"output-{i + 1}.txt") for i in range(count)],
            Say("Done."),
        ]
    raise BadRequest(f"unknown emulator script: {script!r}")


def is_blocking(step: Step) -> bool:
    return isinstance(step, UseCustomTool) or (isinstance(step, UseTool) and step.ask)


def choose_script(metadata: dict[str, str], message_text: str | None, default: str) -> str:
    if "emulator_script" in metadata:
        return metadata["emulator_script"]
    if message_text:
        token = script_token(message_text)
        if token:
            return token
    return default
