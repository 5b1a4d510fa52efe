"""Promotion gates: the YAML's `evaluate.gates` judged on the evaluate job's result dict.

    results = evaluate_gates(gates, evaluation)   # one GateResult per bound
    passed = all(r.passed for r in results)       # no gates: passes

A gate is a plain dict in the shapes of `config.schema.Gate` (None values are ignored):

    {metric: auc, min: 0.8}                     the metric from evaluation["metrics"] >= 0.8
    {metric: log_loss, max: 0.5}                ... <= 0.5 (min and max in one gate: two results)
    {metric: auc, min_gain_over_champion: 0.0}  evaluation["gain_over_champion"]["auc"] >= 0.0
                                                (direction-aware, computed by the evaluate job);
                                                no champion: passes by rule and says so; a champion
                                                that could not be scored: fails with the reason
    {per_class: recall, min: 0.6}               recall of every class in evaluation["per_class"] >= 0.6
    {latency_p95_ms: 20}                        evaluation["latency"]["p95_ms"] <= 20
    {max_model_size_mb: 50}                     evaluation["model_size_mb"] <= 50

Metric names are the evaluation's (accuracy, auc, f1, log_loss...). A gate naming a metric the
evaluation lacks, or whose value is undefined (null) on this data, fails with a detail that says
so: a gate that cannot be checked never lets a model through.

No Airflow here: the operators and any other caller use the same functions.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

GATE_KINDS = ("min", "max", "min_gain_over_champion", "per_class", "latency_p95_ms", "max_model_size_mb")


@dataclass(frozen=True)
class GateResult:
    """One bound checked on one evaluation.

    `name` reads as the rule ("auc >= 0.8"); `value` is what was measured (the worst class for a
    per-class gate, the gain for a champion gate; None when it could not be measured); `bound` the
    limit; `detail` says why it passed or failed and by how much ("0.79 < 0.8 by 0.01").
    """

    name: str
    kind: str
    metric: str | None
    value: float | None
    bound: float
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateResult:
        fields: dict[str, Any] = {k: data.get(k) for k in ("name", "kind", "metric", "value", "bound", "passed", "detail")}
        return cls(**fields)


def normalize_gates(gates: Iterable[Any] | None) -> list[dict[str, Any]]:
    """Gates as plain dicts without None values (accepts dicts or pydantic models such as `Gate`)."""
    out = []
    for gate in gates or ():
        if hasattr(gate, "model_dump"):
            gate = gate.model_dump()
        if not isinstance(gate, Mapping):
            raise TypeError(f"a gate must be a mapping, found {type(gate).__name__}: {gate!r}")
        out.append({str(k): v for k, v in gate.items() if v is not None})
    return out


def gate_policy_hash(gates: Iterable[Any] | None) -> str:
    """A short, stable hash of a gate set (gate order matters; None values, key order and 20 vs 20.0 do not).

    Recorded on every version as the policy it was judged by, so "which rules let this model
    through?" has an answer that survives later edits of the YAML.
    """
    # Numbers as floats: `latency_p95_ms: 20` in YAML and 20.0 from the schema are the same rule.
    gates = [
        {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in g.items()}
        for g in normalize_gates(gates)
    ]
    canonical = json.dumps(gates, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def evaluate_gates(gates: Iterable[Any] | None, evaluation: Mapping[str, Any]) -> list[GateResult]:
    """Judge each gate on the evaluation; see the module docstring for the gate shapes."""
    results: list[GateResult] = []
    for gate in normalize_gates(gates):
        if "latency_p95_ms" in gate:
            results.append(
                _ceiling("latency_p95_ms", "p95 latency", float(gate["latency_p95_ms"]), _latency_p95(evaluation), "ms")
            )
        elif "max_model_size_mb" in gate:
            results.append(
                _ceiling(
                    "max_model_size_mb", "model size", float(gate["max_model_size_mb"]), evaluation.get("model_size_mb"), "MB"
                )
            )
        elif "per_class" in gate:
            results.append(_per_class(str(gate["per_class"]), float(gate["min"]), evaluation))
        elif "metric" in gate:
            metric = str(gate["metric"])
            if "min_gain_over_champion" in gate:
                results.append(_gain(metric, float(gate["min_gain_over_champion"]), evaluation))
            if "min" in gate:
                results.append(_absolute(metric, "min", float(gate["min"]), evaluation))
            if "max" in gate:
                results.append(_absolute(metric, "max", float(gate["max"]), evaluation))
            if not {"min", "max", "min_gain_over_champion"} & set(gate):
                raise ValueError(f"gate {gate}: a metric gate needs min, max or min_gain_over_champion")
        else:
            raise ValueError(f"gate {gate}: expected one of metric, per_class, latency_p95_ms, max_model_size_mb")
    return results


def failed(results: Iterable[GateResult]) -> list[GateResult]:
    return [r for r in results if not r.passed]


def gate_table(results: Sequence[GateResult], *, markdown: bool = False) -> str:
    """The results as a table a person reads: in the task log (plain) or an approval form (markdown)."""
    rows = [(r.name, fmt(r.value), fmt(r.bound), "pass" if r.passed else "FAIL", r.detail) for r in results]
    head = ("gate", "value", "bound", "result", "detail")
    if not rows:
        return "(no gates configured: nothing to check)"
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(row[i])) for row in (head, *rows)) for i in range(len(head))]
    return "\n".join("  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in (head, *rows))


def fmt(value: float | None) -> str:
    """A number as people write it: 4 significant digits, no exponent for everyday sizes."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-4):
        return f"{value:.3e}"
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:.6g}"


# -- one gate kind each -----------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _compare(value: float, bound: float, *, floor: bool) -> tuple[bool, str]:
    """(passed, detail) for value >= bound (floor) or value <= bound (ceiling)."""
    if floor:
        if value >= bound:
            return True, f"{fmt(value)} >= {fmt(bound)} (margin {fmt(value - bound)})"
        return False, f"{fmt(value)} < {fmt(bound)} by {fmt(bound - value)}"
    if value <= bound:
        return True, f"{fmt(value)} <= {fmt(bound)} (margin {fmt(bound - value)})"
    return False, f"{fmt(value)} > {fmt(bound)} by {fmt(value - bound)}"


def _absolute(metric: str, side: str, bound: float, evaluation: Mapping[str, Any]) -> GateResult:
    name = f"{metric} {'>=' if side == 'min' else '<='} {fmt(bound)}"
    metrics = evaluation.get("metrics") or {}
    if metric not in metrics:
        known = ", ".join(sorted(metrics)) or "none"
        return GateResult(name, side, metric, None, bound, False, f"the evaluation has no metric {metric!r} (it has: {known})")
    value = _number(metrics[metric])
    if value is None:
        return GateResult(name, side, metric, None, bound, False, f"{metric} is undefined on this validation data")
    passed, detail = _compare(value, bound, floor=side == "min")
    return GateResult(name, side, metric, value, bound, passed, detail)


def _gain(metric: str, bound: float, evaluation: Mapping[str, Any]) -> GateResult:
    kind = "min_gain_over_champion"
    name = f"{metric} gain over champion >= {fmt(bound)}"
    metrics = evaluation.get("metrics") or {}
    if metric not in metrics:
        known = ", ".join(sorted(metrics)) or "none"
        return GateResult(name, kind, metric, None, bound, False, f"the evaluation has no metric {metric!r} (it has: {known})")
    champion = evaluation.get("champion")
    if champion is None:
        why = evaluation.get("champion_absent_reason") or "no champion"
        return GateResult(name, kind, metric, None, bound, True, f"no champion ({why}): passes by rule")
    who = f"champion v{champion.get('version')}"
    if champion.get("error"):
        return GateResult(name, kind, metric, None, bound, False, f"{who} could not be scored on this data: {champion['error']}")
    gain = _number((evaluation.get("gain_over_champion") or {}).get(metric))
    if gain is None:
        return GateResult(
            name, kind, metric, None, bound, False, f"gain over {who} is undefined ({metric} is null for one of them)"
        )
    ours, theirs = _number(metrics.get(metric)), _number((champion.get("metrics") or {}).get(metric))
    versus = f"{who}: {fmt(theirs)} -> {fmt(ours)}" if ours is not None and theirs is not None else who
    if champion.get("same_as_candidate"):
        versus += ", the candidate is the champion"
    passed, detail = _compare(gain, bound, floor=True)
    sign = "+" if gain >= 0 else ""
    return GateResult(name, kind, metric, gain, bound, passed, f"gain {sign}{fmt(gain)} over {versus}; {detail}")


def _per_class(metric: str, bound: float, evaluation: Mapping[str, Any]) -> GateResult:
    name = f"{metric} of every class >= {fmt(bound)}"
    per_class = evaluation.get("per_class") or {}
    if not per_class:
        why = (
            "a regression model has no classes"
            if evaluation.get("task") == "regression"
            else "the evaluation has no per-class metrics"
        )
        return GateResult(name, "per_class", metric, None, bound, False, why)
    values: dict[str, float | None] = {}
    for label, numbers in per_class.items():
        if metric not in (numbers or {}):
            known = ", ".join(sorted(numbers or {})) or "none"
            return GateResult(
                name, "per_class", metric, None, bound, False, f"per-class metric {metric!r} is not measured (there are: {known})"
            )
        values[str(label)] = _number(numbers[metric])
    undefined = [label for label, v in values.items() if v is None]
    if undefined:
        return GateResult(
            name, "per_class", metric, None, bound, False, f"{metric} is undefined for class {', '.join(map(repr, undefined))}"
        )
    worst_label = min(values, key=lambda label: values[label])  # type: ignore[arg-type, return-value]
    worst = values[worst_label]
    assert worst is not None
    below = {label: v for label, v in values.items() if v is not None and v < bound}
    if below:
        parts = [
            f"class {label!r} {fmt(v)} < {fmt(bound)} by {fmt(bound - v)}"
            for label, v in sorted(below.items(), key=lambda kv: kv[1])
        ]
        return GateResult(name, "per_class", metric, worst, bound, False, "; ".join(parts))
    return GateResult(
        name,
        "per_class",
        metric,
        worst,
        bound,
        True,
        f"lowest: class {worst_label!r} {fmt(worst)} >= {fmt(bound)} (margin {fmt(worst - bound)})",
    )


def _latency_p95(evaluation: Mapping[str, Any]) -> Any:
    latency = evaluation.get("latency")
    return latency.get("p95_ms") if isinstance(latency, Mapping) else None


def _ceiling(kind: str, what: str, bound: float, raw: Any, unit: str) -> GateResult:
    name = f"{what} <= {fmt(bound)} {unit}"
    value = _number(raw)
    if value is None:
        return GateResult(name, kind, None, None, bound, False, f"the evaluation has no {what} measurement")
    passed, detail = _compare(value, bound, floor=False)
    return GateResult(name, kind, None, value, bound, passed, f"{detail} {unit}")
