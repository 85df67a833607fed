#!/usr/bin/env python3
"""Schema check of Kubernetes manifests against the API models of the
official Python client (Debian's python3-kubernetes): every field of every
document must exist in its model with the right type, every required field
must be there.  Prints one line per problem; exit 1 if any."""
import re
import sys

import kubernetes.client as k8s
import yaml

KINDS = {("v1", "Namespace"): "V1Namespace", ("v1", "ConfigMap"): "V1ConfigMap",
         ("apps/v1", "DaemonSet"): "V1DaemonSet", ("v1", "ServiceAccount"): "V1ServiceAccount"}
problems = []


def check(value, typ, path):
    if value is None:
        return
    m = re.match(r"list\[(.*)\]$", typ)
    if m:
        if not isinstance(value, list):
            problems.append(f"{path}: want a list ({typ})")
            return
        for i, v in enumerate(value):
            check(v, m.group(1), f"{path}[{i}]")
        return
    m = re.match(r"dict\(str, (.*)\)$", typ)
    if m:
        if not isinstance(value, dict):
            problems.append(f"{path}: want a map ({typ})")
            return
        for k, v in value.items():
            check(v, m.group(1), f"{path}.{k}")
        return
    scalars = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object,
               "datetime": str, "date": str}
    if typ in scalars:
        if typ == "int" and isinstance(value, bool) or not isinstance(value, scalars[typ]):
            problems.append(f"{path}: want {typ}, got {type(value).__name__} {value!r}")
        return
    cls = getattr(k8s, typ, None)
    if cls is None:
        problems.append(f"{path}: unknown model {typ}")
        return
    if not isinstance(value, dict):
        problems.append(f"{path}: want an object ({typ})")
        return
    by_json = {j: a for a, j in cls.attribute_map.items()}
    for key, v in value.items():
        if key not in by_json:
            problems.append(f"{path}.{key}: no such field in {typ}")
            continue
        check(v, cls.openapi_types[by_json[key]], f"{path}.{key}")
    # Required fields: the model's constructor refuses None for them.
    try:
        args = {a: (value.get(j) if value.get(j) is not None else None) for a, j in cls.attribute_map.items()}
        cls(**{a: v for a, v in args.items() if v is not None})
    except ValueError as e:
        problems.append(f"{path}: {e}")
    except TypeError:
        pass


def main():
    n = 0
    for path in sys.argv[1:]:
        for i, doc in enumerate(yaml.safe_load_all(open(path))):
            if doc is None:
                continue
            n += 1
            where = f"{path}#{i}"
            key = (doc.get("apiVersion"), doc.get("kind"))
            if key not in KINDS:
                problems.append(f"{where}: unknown apiVersion/kind {key}")
                continue
            check(doc, KINDS[key], f"{where}({key[1]})")
    for p in problems:
        print(p)
    print(f"{n} documents, {len(problems)} problems")
    return 1 if problems or n == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
