"""schemathesis (the real tool, from PyPI) drives every operation of `/openapi.json` with
generated valid and invalid input: no 5xx, every response matches the document (status, content
type, body schema, headers), invalid input is rejected with 4xx.

Two checks are left out, on purpose:
- `positive_data_acceptance`: names (service, group, data id, ...) are path segments with rules
  (no '/', no control characters, at most 256 bytes) the document states in prose, so generated
  "valid" strings that break them are rightly refused with 400 INVALID_ARGUMENT;
- `use_after_free`: a config item's history outlives the item (as in Nacos) — reading the history
  of a deleted item is meant to work.
Streaming operations (subscribe, observe, watch, listen) are covered by test_api.py instead."""

import shutil
import subprocess

import pytest


def test_openapi_document_holds_under_schemathesis(roster, tmp_path):
    exe = shutil.which("schemathesis") or shutil.which("st")
    if exe is None:
        pytest.fail("schemathesis is not installed (tests/process/requirements.txt)")
    out = subprocess.run(
        [exe, "run", f"http://127.0.0.1:{roster.http_port}/openapi.json",
         "--checks", "all", "--exclude-checks", "positive_data_acceptance,use_after_free",
         "--max-examples", "25", "--request-timeout", "10", "--seed", "1",
         "--exclude-path-regex", "(subscribe|observe|watch|listen)$"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)  # its cache stays out of the repo
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    # The server survived all of it.
    assert roster.alive()
