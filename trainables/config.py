"""A trial's config from what a user wrote: keys and values coerced, presets expanded, validated once at the edge.

The command line (`bench.py trial width=512`), plan files and the sweep all build a TrialConfig here. The pieces:
trainables/keys.py (what each key may take), trainables/trial_config.py (the dataclass and its config_key),
trainables/validation.py (the rules, and the autos they resolve). Their public names are importable from here.
"""

from __future__ import annotations

from trainables.keys import CHOICES, DEFAULT_DATASET, MODEL_PRESETS, ConfigError
from trainables.trial_config import FIELD_TYPES, TrialConfig, field_kind, is_numeric_key
from trainables.validation import validate

__all__ = [
    "CHOICES",
    "DEFAULT_DATASET",
    "FIELD_TYPES",
    "MODEL_PRESETS",
    "ConfigError",
    "TrialConfig",
    "build_config",
    "field_kind",
    "format_assignments",
    "is_numeric_key",
    "parse_assignments",
    "validate",
]


def _coerce(key: str, raw):
    """Turn a command-line or YAML value into the field's type, or raise ConfigError."""
    kind = field_kind(key)
    optional = kind != FIELD_TYPES[key]
    text = raw.lower() if isinstance(raw, str) else None
    if raw is None or text == "auto" or (optional and text in ("none", "")):
        if optional:
            return None
        raise ConfigError(f"{key}: 'auto' is not allowed here; give a {kind}")
    try:
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind == "int":
            if isinstance(raw, bool):
                raise ValueError
            value = float(raw)
            if not value.is_integer():
                raise ValueError
            return int(value)
        if kind == "float":
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        if isinstance(raw, bool):  # YAML 1.1 reads on/off and false/true unquoted as booleans
            spelled = {True: "on", False: "off"} if "on" in CHOICES.get(key, ()) else {True: "true", False: "false"}
            return spelled[raw]
        return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={raw!r} is not a valid {kind}") from None


def build_config(values: dict) -> TrialConfig:
    """Build and validate a config from a mapping of canonical keys (unknown keys are an error)."""
    unknown = sorted(set(values) - set(FIELD_TYPES))
    if unknown:
        known = ", ".join(FIELD_TYPES)
        raise ConfigError(f"unknown key {unknown[0]!r} (known keys: {known})")
    coerced = {k: _coerce(k, v) for k, v in values.items()}
    preset = coerced.get("model")
    if preset is not None:
        if preset not in MODEL_PRESETS:
            raise ConfigError(f"unknown model preset {preset!r} ({', '.join(MODEL_PRESETS)})")
        coerced = MODEL_PRESETS[preset] | coerced  # keys given beside the preset override it
    return validate(TrialConfig(**coerced))


def parse_assignments(items: list[str]) -> dict:
    """['width=512', 'attention=local'] -> {'width': '512', 'attention': 'local'}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def format_assignments(values: dict) -> str:
    """{'width': 512, 'attention': 'local'} -> 'width=512 attention=local': the inverse of parse_assignments,
    and how a plan point is labelled everywhere."""
    return " ".join(f"{k}={v}" for k, v in values.items())
