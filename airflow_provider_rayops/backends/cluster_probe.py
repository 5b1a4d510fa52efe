"""What a Ray cluster offers rayops jobs, as seen from inside it.

This file runs on the cluster as a tiny Ray job, `python -c "<this file>" '<request json>'`,
before rayops ships or trusts any code there: it must work where airflow_provider_rayops is
not installed, so it imports the standard library only, and it never imports what it looks
for (an import could run anything; `find_spec` of a top-level name runs nothing). It prints
one line, `::rayops-probe::{json}`:

    python         "3.11.9"
    executable     the job driver's interpreter
    distributions  {name: installed version or null}, for the names asked
    modules        {name: importable?}, for the top-level modules asked
    rayops         {"version", "digest", "path"} of the airflow_provider_rayops found, or null

The Airflow side reads it in `backends/cluster_code.py` and computes its own digest with the
same `package_digest`, so "the cluster's job code is this very code" is one comparison.
"""

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import sys

MARKER = "::rayops-probe::"
PACKAGE = "airflow_provider_rayops"
_VERSION = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.MULTILINE)


def package_digest(folder: str) -> str:
    """sha256 of a package's Python files (relative path and bytes, sorted): equal digests, same code."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                found.append((os.path.relpath(path, folder).replace(os.sep, "/"), path))
    digest = hashlib.sha256()
    for rel, path in sorted(found):
        with open(path, "rb") as handle:
            digest.update(rel.encode() + b"\0" + handle.read() + b"\0")
    return digest.hexdigest()


def package_version(folder: str):
    """The `__version__` its __init__.py sets, read as text (None when it sets none)."""
    try:
        with open(os.path.join(folder, "__init__.py"), encoding="utf-8") as handle:
            match = _VERSION.search(handle.read())
    except OSError:
        return None
    return match.group(1) if match else None


def _installed(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _importable(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def probe(request):
    spec = importlib.util.find_spec(PACKAGE)
    rayops = None
    if spec is not None and spec.submodule_search_locations:
        folder = next(iter(spec.submodule_search_locations))
        rayops = {"version": package_version(folder), "digest": package_digest(folder), "path": folder}
    return {
        "python": ".".join(str(part) for part in sys.version_info[:3]),
        "executable": sys.executable,
        "distributions": {name: _installed(name) for name in request.get("distributions", [])},
        "modules": {name: _importable(name) for name in request.get("modules", [])},
        "rayops": rayops,
    }


if __name__ == "__main__":
    request = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    sys.stdout.write(MARKER + json.dumps(probe(request), sort_keys=True) + "\n")
    sys.stdout.flush()
