"""Validates BoAmps documents against the official schemas (JSON Schema draft-04), with
every $ref resolved from the local copies of the schemas (no network).

usage: boamps_validate.py SCHEMA_DIR FILE...
Prints one line per problem and exits 1 when any document is invalid.
"""
import json
import pathlib
import sys

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

BASE = "https://raw.githubusercontent.com/Boavizta/BoAmps/main/model/"


def main() -> int:
    schema_dir = pathlib.Path(sys.argv[1])
    resources = []
    for path in sorted(schema_dir.glob("*_schema.json")):
        contents = json.loads(path.read_text(encoding="utf-8"))
        resources.append((BASE + path.name, Resource.from_contents(contents, default_specification=DRAFT4)))
    registry = Registry().with_resources(resources)
    report = json.loads((schema_dir / "report_schema.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft4Validator(report, registry=registry)
    bad = 0
    for name in sys.argv[2:]:
        document = json.loads(pathlib.Path(name).read_text(encoding="utf-8"))
        for error in validator.iter_errors(document):
            bad += 1
            where = "/".join(str(p) for p in error.absolute_path)
            print(f"{name}: {where}: {error.message}")
    print(f"{len(sys.argv) - 2} documents, {bad} problems")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
