"""Pure: what a configuration would do, and why it cannot run, before anything runs.

`idlehook serve`, `idlehook worker` (wherever `wiring.worker` builds one) and `idlehook config
check` call `check`: a route typo must stop the process with one line, not leave sessions idle
with `decision: no_rule` or runs dead-lettered. Errors are what can never work (an event type
one letter off a known one, a handler no entry point provides, a tool module that does not
import, requires_action claimed by a route that cannot answer while tools or approvals wait on
it); warnings are what may be intended (an event type close to none idlehook knows: the API
adds types without notice).
"""

import difflib
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from typing import Any

import structlog
from pydantic import ValidationError

from handlers.config import RouteRule
from handlers.events import KNOWN_TYPES
from handlers.plugin_config import builtin_tables, plugin_tables
from handlers.registry import Registry, installed_names, unknown_handler
from handlers.tools.registry import ENTRY_POINT_GROUP as TOOLS_GROUP
from handlers.tools.registry import ToolRegistry
from idlehook.errors import ConfigError
from idlehook.settings import Settings

log = structlog.get_logger(__name__)

ANSWER = "answer"
# How alike an unknown event type must be to a known one to be called a typo of it (difflib's
# ratio): `session.status_idle` is 0.97 from `session.status_idled`; a new type of a known
# family, e.g. `session.thread_running`, stays under it and is only warned about.
TYPO_CUTOFF = 0.85
_CONDITIONS = (
    "stop_reasons",
    "except_stop_reasons",
    "statuses",
    "agent_ids",
    "deployment_ids",
    "metadata",
    "idle_for",
)


@dataclass(frozen=True)
class EffectiveRoute:
    """One rule the worker routes by, as it will run."""

    name: str
    event_types: tuple[str, ...]
    # Only the conditions the rule sets (an empty one matches anything).
    conditions: dict[str, Any]
    handlers: tuple[str, ...]
    builtin: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "event_types": list(self.event_types),
            "conditions": self.conditions,
            "handlers": list(self.handlers),
            "builtin": self.builtin,
        }


@dataclass(frozen=True)
class ConfigReport:
    routes: tuple[EffectiveRoute, ...]
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    installed_handlers: tuple[str, ...] = ()
    # The custom tools `answer` would serve; None when they were not loaded (nothing answers).
    tools: tuple[str, ...] | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "errors": list(self.errors),
            "warnings": list(self.warnings),
            "routes": [route.as_dict() for route in self.routes],
            "installed_handlers": list(self.installed_handlers),
            "tools": None if self.tools is None else list(self.tools),
        }


@dataclass
class _Findings:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def label(rule: RouteRule, index: int) -> str:
    """How a message names a rule: `[[routes]] "name"`, or its position when it has none."""
    if rule.builtin:
        return f'built-in route "{rule.name}"'
    return f'[[routes]] "{rule.name}"' if rule.name else f"[[routes]] #{index + 1}"


@cache
def known_event_types() -> frozenset[str]:
    """idlehook's vocabulary (handlers/events.py) and every webhook type the SDK can parse."""
    return KNOWN_TYPES | _sdk_webhook_types()


def _sdk_webhook_types() -> frozenset[str]:
    from anthropic.types.beta.beta_webhook_event_data import BetaWebhookEventData

    found: set[str] = set()
    union = typing.get_args(BetaWebhookEventData)[0]  # Annotated[Union[...], discriminator]
    for model in typing.get_args(union):
        annotation = model.model_fields["type"].annotation
        found.update(arg for arg in typing.get_args(annotation) if isinstance(arg, str))
    return frozenset(found)


def effective_routes(rules: Sequence[RouteRule]) -> tuple[EffectiveRoute, ...]:
    routes = []
    for index, rule in enumerate(rules):
        conditions = {key: getattr(rule, key) for key in _CONDITIONS if getattr(rule, key)}
        routes.append(
            EffectiveRoute(
                name=rule.name or f"#{index + 1}",
                event_types=tuple(rule.event_types),
                conditions=conditions,
                handlers=tuple(rule.handlers),
                builtin=rule.builtin,
            )
        )
    return tuple(routes)


def _event_types(rules: Sequence[RouteRule], found: _Findings) -> None:
    known = known_event_types()
    for index, rule in enumerate(rules):
        for event_type in rule.event_types:
            if event_type in known:
                continue
            close = difflib.get_close_matches(event_type, known, n=1, cutoff=TYPO_CUTOFF)
            if close:
                found.errors.append(
                    f"{label(rule, index)}: unknown event type {event_type!r} "
                    f"(did you mean {close[0]}?)"
                )
            else:
                found.warnings.append(
                    f"{label(rule, index)}: event type {event_type!r} is not one idlehook or "
                    "the SDK knows; the rule matches it only if the API sends it"
                )


def _handlers(rules: Sequence[RouteRule], installed: Sequence[str], found: _Findings) -> None:
    for index, rule in enumerate(rules):
        for name in rule.handlers:
            if name not in installed:
                found.errors.append(unknown_handler(name, label(rule, index), installed))


def _plugin_tables(settings: Settings, wanted: set[str], found: _Findings) -> None:
    """Every table validated by its plugin's `Config`, as `wiring.worker` builds them."""
    try:
        Registry.discover(allow=wanted - {ANSWER}, tables=plugin_tables(settings))
    except ValueError as exc:  # PluginConfigError among them
        found.errors.append(str(exc))
    if ANSWER in wanted:
        from handlers.builtin.answer import AnswerConfig

        try:
            AnswerConfig.model_validate(builtin_tables(settings)[ANSWER])
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            found.errors.append(f"plugin 'answer': {problems}")
    unused = sorted(set(settings.plugins) - wanted)
    for name in unused:
        found.warnings.append(f"[plugins.{name}] is not used: no route runs {name!r}")


def _tools_configured(settings: Settings) -> bool:
    return bool(settings.tools.modules) or any(True for _ in entry_points(group=TOOLS_GROUP))


def _approvals_configured(settings: Settings) -> bool:
    return bool(settings.approvals.rules) or settings.approvals.default != "ask"


def _tools(settings: Settings, found: _Findings) -> tuple[str, ...] | None:
    try:
        tools = ToolRegistry.load(settings.tools.modules, settings.tools.idempotent, announce=False)
    except ValueError as exc:  # ToolLoadError, or two tools of one name
        found.errors.append(str(exc))
        return None
    for name in settings.tools.idempotent:
        if name not in tools:
            found.warnings.append(
                f"[tools] idempotent: no tool is named {name!r} (tools: "
                f"{', '.join(tools.names()) or 'none'})"
            )
    return tuple(tools.names())


def _answering(
    settings: Settings, rules: Sequence[RouteRule], wanted: set[str], found: _Findings
) -> None:
    """A written rule took requires_action (so the built-in answer rule stepped aside) and no
    route answers: the tools and approvals configured would never be used."""
    if ANSWER in wanted:
        return
    claims = [label(rule, i) for i, rule in enumerate(rules) if rule.claims_requires_action()]
    waiting = [
        what
        for what, configured in (
            ("[tools]", _tools_configured(settings)),
            ("[approvals]", _approvals_configured(settings)),
        )
        if configured
    ]
    if claims and waiting:
        found.errors.append(
            f"{claims[0]} claims requires_action but no route runs 'answer', so "
            f"{' and '.join(waiting)} would never be used and sessions calling a tool would "
            'wait forever (add "answer" to its handlers)'
        )


def _archive(settings: Settings, found: _Findings) -> None:
    """`[archive] url`: a scheme fsspec knows, its backend installed (s3:// needs s3fs)."""
    if settings.archive.url:
        from handlers.builtin.archive_store import check_url

        problem = check_url(settings.archive.url)
        if problem:
            found.errors.append(problem)


def _tracing(settings: Settings, found: _Findings) -> None:
    """`[tracing] enabled`: the `tracing` extra installed (else the start fails later)."""
    if settings.tracing.enabled:
        from idlehook.tracing import missing_packages

        problem = missing_packages()
        if problem:
            found.errors.append(problem)


def check(settings: Settings) -> ConfigReport:
    """Everything wrong with `settings` that would otherwise fail silently, and its routes."""
    rules = list(settings.routes)
    found = _Findings()
    installed = installed_names()
    wanted = {name for rule in rules for name in rule.handlers}
    _event_types(rules, found)
    _handlers(rules, installed, found)
    if not found.errors:  # discovering plugins would only repeat an unknown handler
        _plugin_tables(settings, wanted & set(installed), found)
    _answering(settings, rules, wanted, found)
    _archive(settings, found)
    _tracing(settings, found)
    tools = _tools(settings, found) if ANSWER in wanted or _tools_configured(settings) else None
    return ConfigReport(
        routes=effective_routes(rules),
        errors=tuple(found.errors),
        warnings=tuple(found.warnings),
        installed_handlers=tuple(installed),
        tools=tools,
    )


def require(settings: Settings) -> ConfigReport:
    """`check`, its warnings logged; raises ConfigError (every error, on one line) if any."""
    report = check(settings)
    for warning in report.warnings:
        log.warning("config.warning", problem=warning)
    if report.errors:
        raise ConfigError("; ".join(report.errors))
    return report
