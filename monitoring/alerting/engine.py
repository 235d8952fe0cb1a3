"""One evaluation cycle: every enabled rule against its metric, incidents as the outcome.

Safety against running twice (two beats, a retried task): each (rule, scope) is evaluated
under a row lock on its AlertState, and a partial unique index allows one firing incident
per (rule, scope); notifications are written in the same transaction as the state change
that causes them, so a transition notifies once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from inkwave.bulk import update_in_bulk
from monitoring.alerting import (
    direct,
    flapping,
    groups,
    incidents,
    notify,
    rules,
    silences,
    suppression,
)
from monitoring.alerting.metrics import REGISTRY, Values, Window, format_value
from monitoring.alerting.transitions import Decision, Tracker, decide
from monitoring.health import redis_reachable
from monitoring.models import (
    AlertRule,
    AlertState,
    Incident,
    IncidentStatus,
    Inhibition,
)

logger = structlog.get_logger(__name__)


@dataclass
class CycleResult:
    evaluated: int = 0
    opened: list[Incident] = field(default_factory=list)
    resolved: list[Incident] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class MetricCache:
    """Each (metric, window) is computed once per cycle, however many rules use it."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self._values: dict[tuple[str, int], Values] = {}
        self._memo: dict[object, object] = {}

    def values(self, rule: AlertRule) -> Values:
        key = (rule.metric, rule.window_seconds)
        if key not in self._values:
            window = Window(self.now, rule.window_seconds, self._memo)
            self._values[key] = REGISTRY[rule.metric].compute(window)
        return self._values[key]


def run_cycle(now: datetime | None = None) -> CycleResult:
    now = now or timezone.now()
    result = CycleResult()
    cache = MetricCache(now)
    _record_direct_alerts()
    _housekeeping(now, result)
    rules = list(AlertRule.objects.filter(enabled=True).prefetch_related("destinations"))
    # Causes first: an alert that a firing cause explains is then held back in the same
    # cycle (inhibition) rather than sent a moment before its cause.
    order = _cause_order()
    rules.sort(key=lambda r: (order.get(r.pk, 0), r.name))
    # Read every state and open incident once; only scopes that may change are locked.
    states = {(s.rule_id, s.scope): s for s in AlertState.objects.filter(rule__enabled=True)}
    firing = set(
        Incident.objects.filter(status=IncidentStatus.FIRING).values_list("rule_id", "scope")
    )
    quiet: list[AlertState] = []
    # A group's Slack post is composed once per cycle (every few seconds of a long one),
    # however many of its members opened or resolved in it (a rule firing at every venue).
    with groups.composed_once(now):
        _catch_up(now, result)
        for rule in rules:
            if rule.metric not in REGISTRY:
                result.errors.append(f"{rule.name}: unknown metric {rule.metric}")
                continue
            try:
                values = cache.values(rule)
                scopes = set(values) | {scope for (rule_id, scope) in states if rule_id == rule.pk}
                moving: dict[str, float | None] = {}
                for scope in sorted(scopes):
                    value, state = values.get(scope), states.get((rule.pk, scope))
                    if _is_quiet(rule, value, state, (rule.pk, scope) in firing):
                        if state is not None:
                            state.last_value, state.last_evaluated_at = value, now
                            quiet.append(state)
                        continue
                    moving[scope] = value
                new = [scope for scope in moving if (rule.pk, scope) not in states]
                for scope in evaluate_in_bulk(rule, moving, now, new=new):
                    evaluate(rule, scope, moving[scope], now, result)
                    groups.compose_due(now)
            except Exception as exc:
                logger.exception("alert_rule_failed", rule=rule.name)
                result.errors.append(f"{rule.name}: {type(exc).__name__}: {exc}")
            result.evaluated += 1
    AlertState.objects.bulk_update(quiet, ["last_value", "last_evaluated_at"], batch_size=500)
    logger.info(
        "alert_cycle_done",
        rules=result.evaluated,
        opened=len(result.opened),
        resolved=len(result.resolved),
    )
    return result


def _is_quiet(
    rule: AlertRule, value: float | None, state: AlertState | None, has_incident: bool
) -> bool:
    """Nothing can happen: no incident, not breaching, and no pending or clearing clock."""
    if has_incident or (value is not None and rule.breaches(value)):
        return False
    return state is None or (state.breaching_since is None and state.clear_since is None)


def _cause_order() -> dict[int, int]:
    """Each rule's depth in the inhibition graph: causes come before what they hold back."""
    sources: dict[int, list[int]] = {}
    for source_id, target_id in Inhibition.objects.values_list("source_id", "target_id"):
        sources.setdefault(target_id, []).append(source_id)
    depth: dict[int, int] = {}

    def level(rule_id: int, seen: frozenset[int]) -> int:
        if rule_id not in depth:
            causes = [s for s in sources.get(rule_id, []) if s not in seen]
            depth[rule_id] = 1 + max((level(s, seen | {rule_id}) for s in causes), default=-1)
        return depth[rule_id]

    for rule_id in sources:
        level(rule_id, frozenset())
    return depth


def _housekeeping(now: datetime, result: CycleResult) -> None:
    """What the channel must hear that no single rule's value changes: a silence that
    ended, an alert that stopped flapping."""
    for name, step in (
        ("silence_summaries", silences.summarize_ended_silences),
        ("settled_runs", flapping.settle_quiet_runs),
    ):
        try:
            step(now)
        except Exception as exc:
            logger.exception("alert_housekeeping_failed", step=name)
            result.errors.append(f"{name}: {type(exc).__name__}: {exc}")


def _catch_up(now: datetime, result: CycleResult) -> None:
    try:
        groups.catch_up(now)
    except Exception as exc:
        logger.exception("alert_group_catch_up_failed")
        result.errors.append(f"group catch-up: {type(exc).__name__}: {exc}")


def _record_direct_alerts() -> None:
    """Alerts this host sent without the database (or Redis) go into it now that it works."""
    try:
        direct.record_recovery("database")
        if not settings.REDIS_URL or redis_reachable():
            direct.record_recovery("redis")
    except Exception:
        # Recording the past must never stop the rules from being evaluated now.
        logger.exception("direct_alert_recovery_failed")


def evaluate_in_bulk(
    rule: AlertRule, values: dict[str, float | None], now: datetime, *, new: Iterable[str] = ()
) -> list[str]:
    """Evaluate the scopes where nothing but the rule's clocks and the incident's counters
    change (pending, firing on with no reminder or escalation due, clearing), in one
    transaction of a few statements; return the others (an incident opens or resolves, a
    follow-up is due), for `evaluate` one at a time. The rows are locked as `evaluate`
    locks them (the states, then the incidents, each in id order), so a second cycle at
    once waits for this one and then sees what it wrote. `new`: the scopes with no state
    yet (created here; one another cycle created meanwhile is kept)."""
    if not values:
        return []
    single: list[str] = []
    with transaction.atomic():
        AlertState.objects.bulk_create(
            [AlertState(rule=rule, scope=scope) for scope in new],
            ignore_conflicts=True,
            batch_size=1000,
        )
        states = {
            s.scope: s
            for s in AlertState.objects.select_for_update()
            .filter(rule=rule, scope__in=list(values))
            .order_by("pk")
        }
        open_incidents = {
            i.scope: i
            for i in Incident.objects.select_for_update(of=("self",))
            .filter(rule=rule, scope__in=list(values), status=IncidentStatus.FIRING)
            .order_by("pk")
        }
        # Incidents held back when they opened ask every cycle whether they may be announced
        # now: the silences and inhibitions (a maintenance window over every venue, the
        # database's outage) are read once for all of them.
        held = suppression.held_scopes(
            rule, [s for s, i in open_incidents.items() if notify.never_announced(i)], now
        )
        changed: list[AlertState] = []
        still: list[tuple[Incident, float]] = []
        clearing: list[tuple[Incident, float]] = []
        for scope, value in values.items():
            state, incident = states.get(scope), open_incidents.get(scope)
            if state is None:  # removed since the cycle read it: evaluate makes it again
                single.append(scope)
                continue
            if incident is not None:
                incident.rule = rule
            tracker = Tracker(state.breaching_since, state.clear_since)
            decision = decide(rule, tracker, value, now, open_incident=incident is not None)
            if decision == Decision.STILL_FIRING:
                assert incident is not None
                assert value is not None
                if notify.follow_up_due(incident, now, held=scope in held):
                    single.append(scope)
                    continue
                still.append((incident, value))
            elif decision == Decision.CLEARING:
                assert incident is not None
                if value is not None:
                    clearing.append((incident, value))
            elif decision != Decision.NOTHING:
                single.append(scope)
                continue
            state.breaching_since, state.clear_since = tracker.breaching_since, tracker.clear_since
            state.last_value, state.last_evaluated_at = value, now
            changed.append(state)
        incidents.still_firing_many(still, now)
        incidents.observed_many(clearing)
        update_in_bulk(
            changed, ["breaching_since", "clear_since", "last_value", "last_evaluated_at"]
        )
    return single


def _locked_state(rule: AlertRule, scope: str) -> AlertState:
    AlertState.objects.get_or_create(rule=rule, scope=scope)
    return AlertState.objects.select_for_update().get(rule=rule, scope=scope)


def _open_incident(rule: AlertRule, scope: str) -> Incident | None:
    return (
        Incident.objects.select_for_update(of=("self",))
        .select_related("rule", "notification")
        .filter(rule=rule, scope=scope, status=IncidentStatus.FIRING)
        .first()
    )


def evaluate(
    rule: AlertRule, scope: str, value: float | None, now: datetime, result: CycleResult
) -> None:
    with transaction.atomic():
        state = _locked_state(rule, scope)
        incident = _open_incident(rule, scope)
        tracker = Tracker(state.breaching_since, state.clear_since)
        decision = decide(rule, tracker, value, now, open_incident=incident is not None)
        if decision == Decision.OPEN:
            assert value is not None
            result.opened.append(_open(rule, scope, value, now))
        elif decision == Decision.STILL_FIRING:
            assert incident is not None
            assert value is not None
            _still_firing(incident, value, now)
        elif incident is not None and value is not None:
            incidents.observed(incident, value)
        if decision == Decision.RESOLVE:
            assert incident is not None
            resolve(incident, now, actor=None)
            result.resolved.append(incident)
        state.breaching_since, state.clear_since = tracker.breaching_since, tracker.clear_since
        state.last_value = value
        state.last_evaluated_at = now
        state.save()


def _open(rule: AlertRule, scope: str, value: float, now: datetime) -> Incident:
    condition = f"{rules.condition_text(rule)}: value {format_value(rule.metric, value)}"
    incident = incidents.open_incident(rule, scope, value, now, condition)
    notify.opened(incident, now)
    logger.warning("incident_opened", incident=incident.pk, rule=rule.name, value=value)
    return incident


def _still_firing(incident: Incident, value: float, now: datetime) -> None:
    incidents.still_firing(incident, value, now)
    notify.remind_or_escalate(incident, now)


def resolve(incident: Incident, now: datetime, *, actor: object | None, via: str = "") -> None:
    """Close an open incident (by the engine, or by a person from the admin or Slack)."""
    if not incidents.resolve(incident, now, actor=actor, via=via):
        return
    notify.resolved(incident, now)
    logger.info("incident_resolved", incident=incident.pk, by=str(actor) if actor else "engine")


def acknowledge(
    incident: Incident, actor: object, now: datetime | None = None, *, via: str = ""
) -> bool:
    now = now or timezone.now()
    with transaction.atomic():
        if not incidents.acknowledge(incident, actor, now, via=via):
            return False
        notify.acknowledged(incident, now)
    return True


def resolve_by_hand(
    incident: Incident, actor: object, now: datetime | None = None, *, via: str = ""
) -> bool:
    now = now or timezone.now()
    with transaction.atomic():
        locked = (
            Incident.objects.select_for_update(of=("self",))
            .select_related("rule", "notification")
            .filter(pk=incident.pk, status=IncidentStatus.FIRING)
            .first()
        )
        if locked is None:
            return False
        resolve(locked, now, actor=actor, via=via)
    return True
