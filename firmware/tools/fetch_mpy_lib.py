"""Fetch the micropython-lib modules the device code uses (umqtt.simple, umqtt.robust) from their
PyPI packaging into var/mpy-lib, for the unix port and the device bundle.

We use the maintained client rather than writing MQTT by hand. The PyPI sdists are not
installable by pip (no setup.py), so the module files are taken out of the archives directly and
checked against the SHA-256 that PyPI publishes for each archive.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEST = REPO / "var" / "mpy-lib"
PACKAGES = {
    # PyPI name: (version, {path inside the archive's top folder: path under DEST})
    "micropython-umqtt.simple": ("1.3.4", {"umqtt/simple.py": "umqtt/simple.py"}),
    "micropython-umqtt.robust": ("1.0", {"umqtt/robust.py": "umqtt/robust.py"}),
}


def _fetch(name: str, version: str) -> bytes:
    meta_url = f"https://pypi.org/pypi/{name}/json"
    with urllib.request.urlopen(meta_url, timeout=30) as resp:
        meta = json.load(resp)
    (dist,) = [u for u in meta["releases"][version] if u["packagetype"] == "sdist"]
    with urllib.request.urlopen(dist["url"], timeout=60) as resp:
        data = resp.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != dist["digests"]["sha256"]:
        raise RuntimeError(f"{name} {version}: archive hash {digest} does not match PyPI's")
    return bytes(data)


def main() -> int:
    todo = {
        name: spec
        for name, spec in PACKAGES.items()
        if not all((DEST / out).exists() for out in spec[1].values())
    }
    if not todo:
        return 0
    for name, (version, files) in todo.items():
        try:
            data = _fetch(name, version)
        except OSError as exc:
            print(f"could not download {name} {version} from PyPI: {exc}", file=sys.stderr)
            print("check the network, or copy umqtt/ into var/mpy-lib/ by hand", file=sys.stderr)
            return 1
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if "/" in m.name}
            for inner, out in files.items():
                src = tar.extractfile(members[inner])
                assert src is not None
                target = DEST / out
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(src.read())
        (DEST / "umqtt" / "__init__.py").touch()
        print(f"fetched {name} {version} into {DEST.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
