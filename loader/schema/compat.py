"""Backward compatibility between two versions of an event schema.

Follows Confluent Schema Registry's BACKWARD rule for Avro: consumers using
the new schema must read every event written with the old one. So a new
field needs a default, a field's type may only widen (Avro's promotions:
int → long → float → double), a nullable field stays nullable, and decimals
keep their precision and scale. Removing a field is backward compatible.
Each problem comes back as one sentence naming the field and the fix.
"""

from __future__ import annotations

from loader.schema.model import EventSchema, FieldType, SchemaField

__all__ = ["backward_problems"]

# Writer kind -> reader kinds that can read it (Avro's type promotions).
_PROMOTIONS: dict[str, set[str]] = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
}


def backward_problems(old: EventSchema, new: EventSchema) -> list[str]:
    """Why ``new`` cannot read events written with ``old`` (empty when it can)."""
    problems = _fields(old.fields, new.fields, prefix="")
    if old.fields != new.fields and new.version <= old.version:
        problems.append(
            f"the schema changed but its version did not increase ({old.version} -> {new.version}): "
            'bump "version"'
        )
    return problems


def _fields(old: tuple[SchemaField, ...], new: tuple[SchemaField, ...], prefix: str) -> list[str]:
    problems: list[str] = []
    old_by_name = {f.name: f for f in old}
    for field in new:
        path = f"{prefix}{field.name}"
        before = old_by_name.get(field.name)
        if before is None:
            if not field.has_default:
                problems.append(
                    f"field {path!r} was added without a default, so events written before cannot be "
                    'read: give it a default (for example make it ["null", ...] with "default": null)'
                )
            continue
        if before.nullable and not field.nullable:
            problems.append(
                f"field {path!r} is no longer nullable, but earlier events may hold null: keep it nullable"
            )
        problems += _types(before.type, field.type, path)
    return problems


def _types(old: FieldType, new: FieldType, path: str) -> list[str]:
    if old.kind == "record" and new.kind == "record":
        return _fields(old.fields, new.fields, prefix=f"{path}.")
    if old.kind == "array" and new.kind == "array":
        assert old.items is not None
        assert new.items is not None
        return _types(old.items, new.items, f"{path}[]")
    if old.kind == "decimal" and new.kind == "decimal":
        if (old.precision, old.scale) != (new.precision, new.scale):
            return [
                f"field {path!r} changed from decimal({old.precision},{old.scale}) to "
                f"decimal({new.precision},{new.scale}): Avro readers need the same precision and scale; "
                "add a new field instead"
            ]
        return []
    if new.kind == old.kind or new.kind in _PROMOTIONS.get(old.kind, set()):
        return []
    return [
        f"field {path!r} changed type from {old.kind} to {new.kind}, which cannot read the old events: "
        "keep the type (or widen it: int -> long -> float -> double) and add a new field for the new type"
    ]
