"""Checks KServe manifests against the typed models of KServe's Python SDK (the `kserve`
package), field by field, so that a misspelled or unknown field, a value of the wrong type or a
missing required field fails.

Run with the Python of a venv that has `kserve` (and so `kubernetes`); it cannot run in .venv
(kserve pins fastapi, pydantic and protobuf of its own): see deploy_check.kserve_python().

    python kserve_typed_check.py FILE.yaml...

prints one JSON object per YAML document, {"file", "index", "kind", "name", "errors": [...]},
and exits 0; 2 for a file it cannot read or parse.

How the walk works: every generated model class (kserve.models.V1beta1InferenceService,
kubernetes.client.V1Container, ...) has `openapi_types` (python attribute -> type string such
as 'list[V1Container]', 'Dict[str, str]', 'V1Probe', 'int', 'object') and `attribute_map`
(python attribute -> JSON field name). The document is walked from the kind's root class: a
JSON field that is in no attribute_map is an unknown field; scalars are checked against their
type ('object' takes anything: Kubernetes' int-or-string fields); then each object is built
with its class's constructor, whose client-side validation refuses a missing required field.
"""

import datetime
import json
import re
import sys

import yaml

ROOT_CLASS = {
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
}

# kserve's own models spell containers 'list[X]' and 'dict(str, X)'; the kubernetes client's
# newer ones 'List[X]' and 'Dict[str, X]'.
_LIST = re.compile(r"^[Ll]ist\[(.*)\]$")
_DICT = re.compile(r"^(?:dict\(([^,]+), (.*)\)|Dict\[([^,]+), (.*)\])$")


def _model_class(name):
    import kserve.models
    import kubernetes.client.models

    return getattr(kserve.models, name, None) or getattr(kubernetes.client.models, name, None)


def _scalar_ok(value, typ):
    if typ == "object":
        return True
    if typ == "str":
        return isinstance(value, str)
    if typ == "bool":
        return isinstance(value, bool)
    if typ == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if typ == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typ in ("datetime", "date"):
        return isinstance(value, (str, datetime.date))
    if typ == "ResourceQuantity":  # a Kubernetes quantity: "500m", "1Gi", 2
        return isinstance(value, (str, int, float)) and not isinstance(value, bool)
    return None  # not a scalar type


def walk(value, typ, path, errors):
    """Checks value (plain YAML data) against the type string typ; appends to errors."""
    m = _LIST.match(typ)
    if m:
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list ({typ}), got {type(value).__name__}")
            return
        for i, v in enumerate(value):
            walk(v, m.group(1), f"{path}[{i}]", errors)
        return
    m = _DICT.match(typ)
    if m:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a map ({typ}), got {type(value).__name__}")
            return
        for k, v in value.items():
            if not isinstance(k, str):
                errors.append(f"{path}: key {k!r} is not a string")
            walk(v, m.group(2) or m.group(4), f"{path}.{k}", errors)
        return
    ok = _scalar_ok(value, typ)
    if ok is not None:
        if not ok:
            errors.append(f"{path}: expected {typ}, got {type(value).__name__} {value!r}")
        return
    cls = _model_class(typ)
    if cls is None:
        errors.append(f"{path}: no model class {typ} in kserve or kubernetes")
        return
    if not isinstance(value, dict):
        errors.append(f"{path}: expected an object ({typ}), got {type(value).__name__}")
        return
    attr_of = {json_name: attr for attr, json_name in cls.attribute_map.items()}
    kwargs = {}
    n_before = len(errors)
    for k, v in value.items():
        attr = attr_of.get(k)
        if attr is None:
            errors.append(f"{path}: unknown field {k!r} in {typ}")
            continue
        walk(v, cls.openapi_types[attr], f"{path}.{k}", errors)
        kwargs[attr] = v
    if len(errors) == n_before:
        try:
            cls(**kwargs)  # the SDK's own checks: required fields, allowed values
        except (ValueError, TypeError) as e:
            errors.append(f"{path}: {typ}: {e}")


def check_document(doc):
    """-> (kind, name, errors) for one parsed YAML document."""
    if not isinstance(doc, dict):
        return None, None, [f"document is a {type(doc).__name__}, not an object"]
    kind, api = doc.get("kind"), doc.get("apiVersion")
    name = (doc.get("metadata") or {}).get("name")
    root = ROOT_CLASS.get((api, kind))
    if root is None:
        return kind, name, [f"not a KServe kind this checker knows: {api} {kind}"]
    errors = []
    walk(doc, root, kind, errors)
    return kind, name, errors


def main(argv):
    for path in argv[1:]:
        try:
            with open(path) as f:
                docs = [d for d in yaml.safe_load_all(f) if d is not None]
        except (OSError, yaml.YAMLError) as e:
            print(f"{path}: {e}", file=sys.stderr)
            return 2
        for i, doc in enumerate(docs):
            kind, name, errors = check_document(doc)
            print(json.dumps({"file": path, "index": i, "kind": kind, "name": name,
                              "errors": errors}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
