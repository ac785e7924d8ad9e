"""Experiments declared in a YAML file: schema, validation and the messages of its errors.

The file (``RECSYS_EXPERIMENTS_FILE``) lists experiments; each splits visitors between
variants by weight, and each variant is a ranking: a model (the ``champion`` the service
serves, the ``challenger`` alias, or a pinned registry version) under a named policy (by
default the one the model's bundle names)::

    experiments:
      - name: ranking-vs-popular
        salt: ranking-vs-popular-2026-12   # optional, default: the name
        start: 2026-12-01T00:00:00Z        # optional, default: started
        end: 2027-01-01T00:00:00Z          # optional, default: open-ended
        variants:                          # the first one is the control
          - name: control
            weight: 50
            model: champion                # champion | challenger | a version number
          - name: popular
            weight: 50
            policy: popular                # a recsys.names.Policy; default: the model's own

Validation runs once, when the service (or ``recsys ab report``) starts; every error names
the file, the experiment and the field. Experiments may not overlap in time: a request is
ranked once, so a visitor can be in one experiment at a time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from recsys.config import CHALLENGER_ALIAS, CHAMPION_ALIAS
from recsys.data.schema import TEXT_LENGTH
from recsys.exceptions import ConfigurationError
from recsys.names import Policy

#: names of experiments and variants: exposure-table text and Prometheus label values
NAME_PATTERN: Final = rf"^[A-Za-z0-9_.-]{{1,{TEXT_LENGTH}}}$"
#: model references a variant may name besides a registry version number
ALIASES: Final = (CHAMPION_ALIAS, CHALLENGER_ALIAS)

#: default attribution window after a visitor's first exposure (one day)
DEFAULT_WINDOW_S: Final = 86_400.0

Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class Variant(BaseModel):
    """One arm of an experiment: a share of the visitors and the ranking they get."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    weight: float = Field(1.0, ge=0, description="Relative share of the visitors (>= 0).")
    model: str = Field(
        CHAMPION_ALIAS,
        description="champion (the served model), challenger (that alias) or a version number.",
    )
    policy: Policy | None = Field(None, description="Ranking policy; default: the model's own.")

    @field_validator("model", mode="before")
    @classmethod
    def _model_reference(cls, value: object) -> object:
        text = str(value).strip() if isinstance(value, int | str) else value
        if isinstance(text, str) and (text in ALIASES or (text.isdigit() and int(text) > 0)):
            return str(int(text)) if text.isdigit() else text
        raise ValueError(
            f"{value!r} is not a model: use {' or '.join(ALIASES)}, or a registry version number"
        )

    @field_validator("weight")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class Experiment(BaseModel):
    """A named split of visitors between variants, active from ``start`` until ``end``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    salt: str = Field("", max_length=256, description="Hash salt; default: the name.")
    start: datetime | None = None
    end: datetime | None = None
    variants: tuple[Variant, ...] = Field(min_length=2)

    @field_validator("start", "end")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        # a time without a zone is read as UTC, so that every replica agrees on it
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        if not self.salt:
            object.__setattr__(self, "salt", self.name)
        names = [v.name for v in self.variants]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"variants: names must be unique, {', '.join(repeated)} repeat")
        if sum(v.weight for v in self.variants) <= 0:
            raise ValueError("variants: weights must add up to more than 0")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"end {self.end.isoformat()} is not after start")
        return self

    @property
    def control(self) -> Variant:
        """The variant the others are compared with: the first one listed."""
        return self.variants[0]

    @property
    def start_s(self) -> float:
        """Start in Unix seconds (-inf: always started)."""
        return -math.inf if self.start is None else self.start.timestamp()

    @property
    def end_s(self) -> float:
        """End in Unix seconds (+inf: open-ended)."""
        return math.inf if self.end is None else self.end.timestamp()

    def variant(self, name: str) -> Variant:
        """The variant called ``name``.

        Raises
        ------
        KeyError
            When there is none.
        """
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise KeyError(name)

    def weights(self) -> dict[str, float]:
        """Each variant's share of the visitors (they add up to 1).

        >>> exp = Experiment(name="e", variants=[{"name": "a", "weight": 3}, {"name": "b"}])
        >>> exp.weights()
        {'a': 0.75, 'b': 0.25}
        """
        total = sum(v.weight for v in self.variants)
        return {v.name: v.weight / total for v in self.variants}


class ExperimentsFile(BaseModel):
    """The whole file: a list of experiments that do not overlap in time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experiments: tuple[Experiment, ...] = ()

    @model_validator(mode="after")
    def _no_overlap(self) -> ExperimentsFile:
        seen: dict[str, str] = {}
        for field, key in (("name", lambda e: e.name), ("salt", lambda e: e.salt)):
            seen.clear()
            for exp in self.experiments:
                value = key(exp)
                if value in seen:
                    raise ValueError(
                        f"experiments {seen[value]!r} and {exp.name!r} have the same {field} "
                        f"{value!r}"
                        + (" (assignments would not be independent)" * (field == "salt"))
                    )
                seen[value] = exp.name
        ordered = sorted(self.experiments, key=lambda e: e.start_s)
        for first, second in zip(ordered, ordered[1:], strict=False):
            if second.start_s < first.end_s:
                raise ValueError(
                    f"experiments {first.name!r} and {second.name!r} overlap in time "
                    f"({_span(first)} and {_span(second)}): a visitor can be in one "
                    "experiment at a time"
                )
        return self


def _span(exp: Experiment) -> str:
    start = exp.start.isoformat() if exp.start else "always"
    end = exp.end.isoformat() if exp.end else "open-ended"
    return f"{start} .. {end}"


def _where(loc: Sequence[int | str], raw: Any) -> str:
    """Location of a validation error as a person reads it: the experiment by name."""
    parts = list(loc)
    if len(parts) >= 2 and parts[0] == "experiments" and isinstance(parts[1], int):
        index = parts[1]
        try:
            name = raw["experiments"][index]["name"]
        except (KeyError, IndexError, TypeError):
            name = None
        label = f"experiment {name!r}" if isinstance(name, str) else f"experiments[{index}]"
        rest = parts[2:]
        if len(rest) >= 2 and rest[0] == "variants" and isinstance(rest[1], int):
            rest = [f"variants[{rest[1]}]", *rest[2:]]
        return label + (f": {'.'.join(map(str, rest))}" if rest else "")
    return ".".join(map(str, parts))


def parse_experiments(raw: Any, source: str = "experiments") -> tuple[Experiment, ...]:
    """Validate the parsed YAML document of an experiments file.

    Parameters
    ----------
    raw
        The document (a mapping with an ``experiments`` list; empty or None = none).
    source
        What to call the document in error messages (the file's path).

    Raises
    ------
    ConfigurationError
        With one line per problem, each naming ``source``, the experiment and the field.

    Examples
    --------
    >>> doc = {"experiments": [{"name": "e1", "variants": [
    ...     {"name": "control"}, {"name": "pop", "policy": "popularity"}]}]}
    >>> parse_experiments(doc, "x.yaml")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    recsys.exceptions.ConfigurationError: x.yaml: experiment 'e1': variants[1].policy: ...
    """
    if raw is None:
        return ()
    try:
        return ExperimentsFile.model_validate(raw).experiments
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_url=False):
            message = str(error["msg"]).removeprefix("Value error, ")
            if error["type"] == "enum":
                message += f" (got {error['input']!r})"
            where = _where(error["loc"], raw)
            lines.append(f"{source}: {where}: {message}" if where else f"{source}: {message}")
        raise ConfigurationError("\n".join(lines)) from None


def load_experiments(path: str | Path) -> tuple[Experiment, ...]:
    """Read and validate an experiments file (see the module docstring for its schema).

    Raises
    ------
    ConfigurationError
        The file is missing, is not YAML, or breaks a rule; the message names the file, the
        experiment and the field.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read the experiments file: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path}: not valid YAML: {exc}") from None
    return parse_experiments(raw, str(path))


def model_references(experiments: Sequence[Experiment]) -> set[str]:
    """Every model the variants name other than the champion (aliases, version numbers)."""
    return {v.model for e in experiments for v in e.variants if v.model != CHAMPION_ALIAS}
