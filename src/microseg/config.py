"""Workspace configuration (``microseg.yaml``): thresholds, scope and guardrails for ``plan``."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from microseg.analyses.zones import default_guardrails
from microseg.errors import InputError
from microseg.ir.model import Guardrail, Settings
from microseg.ir.serde import line_of


class PlanConfig(BaseModel):
    """Every field is optional; unknown fields are errors (a typo must not silently change a plan)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_flows: int = Field(default=1, ge=1, description="minimum accepted flows before an edge is codified")
    min_days: int = Field(default=1, ge=1, description="minimum distinct days an edge was seen")
    bad_line_threshold: float = Field(default=0.01, ge=0, le=1,
                                      description="share of unparseable flow lines that fails the run")
    excluded_namespaces: tuple[str, ...] = Settings().excluded_namespaces
    guardrails: tuple[Guardrail, ...] | None = Field(default=None, description="replaces the defaults")
    extra_guardrails: tuple[Guardrail, ...] = ()
    disable_guardrails: tuple[str, ...] = ()
    targets: tuple[str, ...] = ("kubernetes",)

    def settings(self) -> Settings:
        return Settings(min_flows=self.min_flows, min_days=self.min_days,
                        excluded_namespaces=self.excluded_namespaces)

    def effective_guardrails(self) -> tuple[Guardrail, ...]:
        base = self.guardrails if self.guardrails is not None else default_guardrails()
        unknown = set(self.disable_guardrails) - {g.id for g in base}
        if unknown:
            raise InputError(f"disable_guardrails names unknown guardrail(s): {', '.join(sorted(unknown))}",
                             field="disable_guardrails")
        chosen = [g for g in base if g.id not in self.disable_guardrails] + list(self.extra_guardrails)
        if len({g.id for g in chosen}) != len(chosen):
            raise InputError("duplicate guardrail ids in configuration", field="guardrails")
        return tuple(sorted(chosen, key=lambda g: g.id))


def load_config(path: Path | None) -> PlanConfig:
    if path is None:
        return PlanConfig()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read configuration: {exc.strerror}", file=str(path)) from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(f"not valid YAML: {getattr(exc, 'problem', exc)}", file=str(path),
                         line=mark.line + 1 if mark else None) from exc
    if not isinstance(data, dict):
        raise InputError("expected a mapping", file=str(path), line=1)
    try:
        return PlanConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InputError(err["msg"], file=str(path), line=line_of(text, err["loc"]),
                         field=".".join(map(str, err["loc"]))) from exc
