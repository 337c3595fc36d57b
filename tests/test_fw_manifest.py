"""firmware/manifest.py, the freeze manifest of a custom ESP32 image, names exactly the modules
of the headset bundle: evaluated here with a tiny stand-in for MicroPython's manifest functions
(tools/manifestfile.py: module, package, include, require)."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware.tools import bundle

MANIFEST = bundle.REPO / "firmware" / "manifest.py"


class ManifestError(AssertionError):
    pass


def evaluate(path: Path) -> tuple[set[str], list[str]]:
    """(frozen paths as the image stores them, included manifests) of a manifest file."""
    frozen: set[str] = set()
    included: list[str] = []

    def add(base: Path, rel: str) -> None:
        if not rel.endswith(".py"):
            raise ManifestError(f"{rel}: only .py files are frozen")
        if not (base / rel).is_file():
            raise ManifestError(f"{path.name} names {rel}, which is not in {base}")
        frozen.add(rel)

    def package(package_path: str, files=None, base_path: str = ".", opt=None) -> None:
        base = (path.parent / base_path).resolve()
        if files is None:
            files = [str(p.relative_to(base / package_path))
                     for p in sorted((base / package_path).rglob("*.py"))]  # fmt: skip
        for f in files:
            add(base, f"{package_path}/{f}")

    def module(module_path: str, base_path: str = ".", opt=None) -> None:
        add((path.parent / base_path).resolve(), module_path)

    def include(manifest_path: str, **kw) -> None:
        included.append(manifest_path)

    def require(name: str, **kw) -> None:
        included.append(f"require:{name}")

    code = compile(path.read_text(), str(path), "exec")
    exec(code, {"__builtins__": {}, "package": package, "module": module, "include": include,
                "require": require})  # fmt: skip
    return frozen, included


def test_the_freeze_manifest_names_every_headset_module_and_no_other():
    frozen, included = evaluate(MANIFEST)
    device = {f"{stem}.py" for _, stem in bundle.device_sources()}
    assert not device - frozen, f"headset modules missing from {MANIFEST.name}: {sorted(device - frozen)}"
    assert not frozen - device, f"{MANIFEST.name} freezes what the headset does not run: {sorted(frozen - device)}"
    # the port's own frozen modules (_boot mounts the filesystem) stay in the image
    assert included == ["$(PORT_DIR)/boards/manifest.py"]


def test_the_evaluator_catches_a_missing_module(tmp_path):
    """The check above can fail: a manifest without one module, or naming a file that is gone."""
    text = MANIFEST.read_text()
    short = tmp_path / "firmware" / "manifest.py"
    short.parent.mkdir()
    for _, stem in bundle.device_sources():
        (tmp_path / f"{stem}.py").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f"{stem}.py").write_text("")
    short.write_text(text.replace('        "core/policy.py",\n', ""))
    frozen, _ = evaluate(short)
    assert "firmware/core/policy.py" not in frozen
    (short.parent / "headset" / "tls.py").unlink()
    with pytest.raises(ManifestError, match="names firmware/headset/tls.py"):
        evaluate(short)
