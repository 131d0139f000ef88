#!/usr/bin/env python3
"""Make the Kubernetes JSON schemas shipped in the `kubernetes-validate` PyPI package usable by
kubeconform offline: they reference their shared definitions as "/api/_definitions.json#...",
resolved against each file's `$id` (https://kubernetes.io/...), which kubeconform would fetch.
Drop the `$id`s and point the references at the local _definitions.json (file://).

Usage: k8s_schemas.py OUTDIR [K8S_VERSION]   -> OUTDIR/<version>-standalone-strict/*.json
Prints the kubeconform -schema-location template to use.
"""
import json
import os
import sys

import kubernetes_validate

out = sys.argv[1]
version = sys.argv[2] if len(sys.argv) > 2 else None
base = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema")
versions = sorted((d[: -len("-local-strict")] for d in os.listdir(base) if d.endswith("-local-strict")),
                  key=lambda v: tuple(int(x) for x in v.lstrip("v").split(".")))
version = version or versions[-1]
src = os.path.join(base, version + "-local-strict")
dst = os.path.join(out, version + "-standalone-strict")
os.makedirs(dst, exist_ok=True)
for f in os.listdir(src):
    if f.endswith(".json"):
        text = open(os.path.join(src, f)).read().replace(
            '"/api/_definitions.json#', '"file://%s/_definitions.json#' % os.path.abspath(dst))
        schema = json.loads(text)
        schema.pop("$id", None)
        with open(os.path.join(dst, f), "w") as fh:
            json.dump(schema, fh)
print(version)
