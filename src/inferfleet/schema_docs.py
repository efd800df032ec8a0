"""What is written from the schema (inferfleet.schema): the roles' argument-spec options, docs/settings.md and
docs/service.schema.json. `python -m inferfleet.schema_docs --write` rewrites them; `--check` (and the unit
tests) fail when a committed file differs from what the schema says.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from pathlib import Path

import yaml
from pydantic import BaseModel

from . import schema
from .paths import project_dir

_PLAIN = {str: "str", int: "int", float: "float", bool: "bool", dict: "dict", list: "list"}


def _members(annotation) -> list:
    """The members of a union (X | None included), Annotated unwrapped, None left out."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [] if annotation is type(None) else [annotation]


def _is_path(annotation) -> bool:
    if typing.get_origin(annotation) is typing.Annotated:
        return any(isinstance(m, schema.Ansible) and m.type == "path" for m in typing.get_args(annotation)[1:])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_path(a) for a in typing.get_args(annotation))
    return False


def ansible_type(annotation) -> dict:
    """The argument-spec type (and elements, choices, options) of a schema annotation."""
    members = _members(annotation)
    if _is_path(annotation) and all(m is str for m in members):
        return {"type": "path"}
    if len(members) == 1:
        member = members[0]
        origin = typing.get_origin(member)
        if origin is typing.Literal:
            choices = list(typing.get_args(member))
            return {"type": _PLAIN[type(choices[0])], "choices": choices}
        if origin is list:
            (inner,) = typing.get_args(member) or (typing.Any,)
            spec = {"type": "list"}
            element = ansible_type(inner) if inner is not typing.Any else {}
            if element.get("type") in ("str", "int", "float", "bool", "dict", "path"):
                spec["elements"] = element["type"]
            return spec
        if origin is dict or member is dict:
            return {"type": "dict"}
        if isinstance(member, type) and issubclass(member, BaseModel):
            return {"type": "dict", "options": {name: option(info) for name, info in member.model_fields.items()}}
        if member in _PLAIN:
            return {"type": _PLAIN[member]}
    if members and all(m in (int, float) for m in members):
        return {"type": "float"}
    return {"type": "raw"}


def _field_type(info) -> dict:
    """pydantic keeps a field's outer Annotated metadata in info.metadata, apart from its annotation."""
    if any(isinstance(m, schema.Ansible) and m.type == "path" for m in info.metadata):
        return {"type": "path"}
    return ansible_type(info.annotation)


def option(info, name: str = "") -> dict:
    spec = _field_type(info)
    extra = info.json_schema_extra or {}
    if name in schema.SECRET_SETTINGS:
        spec["no_log"] = True
    if info.is_required():
        spec["required"] = True
    elif not extra.get("templated") and info.default not in (None, ...):
        spec["default"] = info.default
    spec["description"] = info.description
    return spec


def role_options(role: str) -> dict:
    group, shared = schema.ROLE_SETTINGS[role]
    options = {name: option(schema.SETTINGS[name][1], name) for name in shared}
    options.update({name: option(info, name) for name, info in group.model_fields.items()})
    return options


class _Dumper(yaml.SafeDumper):
    """Lists indented under their key, as yamllint wants them."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


def argument_specs_text(role: str, current: str) -> str:
    """The role's argument_specs.yml with its options as the schema declares them (the header is kept)."""
    document = yaml.safe_load(current)
    document["argument_specs"]["main"]["options"] = role_options(role)
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=100, default_flow_style=False)
    return "---\n# The options are written from src/inferfleet/schema.py by `python -m inferfleet.schema_docs " \
           "--write`;\n# edit the schema, not this list.\n" + body


def _cell(value) -> str:
    if value is None:
        return "null"
    text = value if isinstance(value, str) else json.dumps(value)
    return f"`{text}`".replace("|", "\\|") if text != "" else '`""`'


def _type_text(info) -> str:
    spec = _field_type(info)
    text = spec["type"] + (f" of {spec['elements']}" if spec.get("elements") else "")
    if spec.get("choices"):
        text += ": " + ", ".join(map(str, spec["choices"]))
    return text


# Settings whose value is a mapping (or a list of mappings) with keys of its own
NESTED = ((schema.Accelerator, "inferfleet_accelerator"), (schema.ModelSource, "inferfleet_models values"),
          (schema.ImageBuild, "images_builds entries"),
          (schema.FabricSource, "fabric_source"), (schema.FabricTest, "fabric_tests entries"),
          (schema.BenchPrefix, "vllm_bench_prefix"))


def settings_markdown() -> str:
    lines = ["# Settings", "",
             "Every setting inferfleet reads, by the stage that reads it, as declared in `src/inferfleet/schema.py`",
             "(this page is written from it: `python -m inferfleet.schema_docs --write`). Set them in `group_vars`/",
             "`host_vars`; a name with one of the prefixes below that is not listed here is refused as a typo.", ""]
    for group in schema.GROUPS:
        lines += [f"## {group.__doc__.strip()}", "", "| setting | type | default | description | example |",
                  "| --- | --- | --- | --- | --- |"]
        for name, info in group.model_fields.items():
            extra = info.json_schema_extra or {}
            default = "required" if info.is_required() else "(derived)" if extra.get("templated") else \
                _cell(info.default)
            example = _cell(extra["example"]) if extra.get("example") is not None else ""
            lines.append(f"| `{name}` | {_type_text(info)} | {default} | {info.description} | {example} |")
        lines.append("")
    lines += ["## Keys of nested settings", ""]
    for model, where in NESTED:
        lines += [f"### {where}", "", model.__doc__.strip(), "", "| key | type | default | description | example |",
                  "| --- | --- | --- | --- | --- |"]
        for name, info in model.model_fields.items():
            extra = info.json_schema_extra or {}
            default = "required" if info.is_required() else _cell(info.default)
            example = _cell(extra["example"]) if extra.get("example") is not None else ""
            lines.append(f"| `{name}` | {_type_text(info)} | {default} | {info.description or ''} | {example} |")
        lines.append("")
    lines += ["## Set by the stages (not settings)", "",
              "Hook variables one role sets and another reads; the schema accepts them without a warning.", "",
              "| name | what |", "| --- | --- |"]
    lines += [f"| `{name}` | {what} |" for name, what in schema.RUNTIME_NAMES.items()]
    lines += ["", "## Service keys (`inferfleet_services` entries)", "",
              "Also as JSON Schema in `docs/service.schema.json`, for editors.", "",
              "| key | type | default | description | example |", "| --- | --- | --- | --- | --- |"]
    for name, info in schema.Service.model_fields.items():
        extra = info.json_schema_extra or {}
        default = "required" if info.is_required() else _cell(info.default)
        example = _cell(extra["example"]) if extra.get("example") is not None else ""
        lines.append(f"| `{info.alias or name}` | {_type_text(info)} | {default} | {info.description} | {example} |")
    return "\n".join(lines) + "\n"


def generated(root: Path | None = None) -> dict[Path, str]:
    """Every file the schema writes, path -> text."""
    root = root or project_dir()
    files = {}
    for role in schema.ROLE_SETTINGS:
        path = root / "roles" / role / "meta" / "argument_specs.yml"
        files[path] = argument_specs_text(role, path.read_text())
    files[root / "docs" / "settings.md"] = settings_markdown()
    files[root / "docs" / "service.schema.json"] = json.dumps(schema.service_json_schema(), indent=2) + "\n"
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inferfleet.schema_docs", description=__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite the files")
    args = parser.parse_args(argv)
    stale = []
    for path, text in generated().items():
        if not path.exists() or path.read_text() != text:
            stale.append(path)
            if args.write:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    for path in stale:
        print(f"{'wrote' if args.write else 'differs from the schema'}: {path}")
    return 0 if args.write or not stale else 1


if __name__ == "__main__":
    sys.exit(main())
