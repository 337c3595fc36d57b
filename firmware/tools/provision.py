"""`calmcue device provision`: make a device ready for its site in one command.

ESP32 (over the serial raw REPL): validate everything first, then upload the firmware bundle
(and model) into bundle slot a/, check every file by SHA-256 on the device, install the A/B
loader, read the device id from the chip, record factory label <-> device id in the companion's
inventory (which also issues the device's MQTT account), write device.json atomically, reboot.
Files already on the device with the right hash are left alone, so re-running after an
interruption finishes the job, and re-running on a finished device changes only the credentials.
With `--image` the bundle's code goes on as its ROMFS image (MicroPython >= 1.25, a board whose
partition table has a romfs partition): written into slot a's half of that partition, read back
and hashed on the device, and only then named in a/romfs.json, which the loader mounts.

Raspberry Pi (`--target pi`): the same identity and validation, written as the agent's JSON
config, locally (`--root`) or over SSH (`--ssh user@host`).
"""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from firmware.core import events
from firmware.tools.devicelink import DeviceError, DeviceLink, put_tree, verify_tree
from firmware.tools.fleet_client import Fleet

REPO = Path(__file__).resolve().parents[2]
OTA_BOOT = REPO / "firmware" / "headset" / "ota_boot.py"
# profile -> target; hardware/<profile>.md documents each
PROFILES = {"esp32s3-headset": "esp32", "pi-counter": "pi"}
DEVICE_FILE = "device.json"
CA_FILE = "ca.der"  # the broker's CA on the headset's flash (device.json mqtt.ca names it)
OTA_CA_FILE = "ota_ca.der"  # the update server's CA, for an https:// --ota-url (device.json ota_ca)
SLOT = "a"
ROOT_MAIN = (
    b"# calmcue: run the active bundle; boot.py (the A/B loader) put its slot first on sys.path\n"
    b"import main\n"
)
LOOPBACK = ("127.0.0.1", "localhost", "::1", "0.0.0.0")


class ProvisionError(ValueError):
    """Everything wrong with a provisioning request, one fix-it line each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("provisioning refused, nothing was written:\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True)
class Identity:
    site: str
    name: str
    label: str
    profile: str
    mqtt_url: str
    wifi_ssid: str = ""
    wifi_password: str = ""
    ota_url: str = ""  # the companion's base URL as the device reaches it (http(s)://...)
    # The CA certificate (DER) that signed the broker's, for mqtts://: the headset checks the
    # broker against it (written to its flash as ca.der; --mqtt-ca FILE, PEM or DER).
    mqtt_ca: bytes = b""
    # The CA (DER) that signed the update server's certificate, for an https:// ota_url
    # (--ota-ca FILE; may be the same file as --mqtt-ca).
    ota_ca: bytes = b""
    settings: dict[str, Any] = field(default_factory=dict)  # initial config.json

    @property
    def target(self) -> str:
        return PROFILES.get(self.profile, "")


def _id_problem(what: str, value: str, example: str) -> str | None:
    msg = _must_be_id(what, value)
    return f"{msg} (e.g. {example!r})" if msg else None


def _url_problems(what: str, url: str, schemes: tuple[str, ...], example: str,
                  device_reaches: bool) -> list[str]:
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        return [f"{what} {url!r} is not of the form {schemes[0]}://HOST:PORT, e.g. {example}"]
    out = []
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        out.append(f"{what}: the port in {url!r} is not a number between 1 and 65535")
    if device_reaches and parts.hostname in LOOPBACK:
        out.append(
            f"{what} {url!r} points at this computer's loopback address, which the device cannot "
            "reach; use the server's LAN address or name, e.g. " + example
        )
    return out


def validate(ident: Identity, *, target: str, loopback_ok: bool = False) -> list[str]:
    """Every problem with the request, before anything touches the device."""
    out: list[str] = []
    if ident.profile not in PROFILES:
        out.append(f"profile {ident.profile!r} is unknown; choose one of {', '.join(PROFILES)}")
    elif ident.target != target:
        out.append(
            f"profile {ident.profile} is for --target {ident.target}, not {target}; pass "
            f"--target {ident.target} or choose a {target} profile"
        )
    for p in (_id_problem("site", ident.site, "store-042"),
              _id_problem("name", ident.name, "counter-2")):
        if p:
            out.append(p)
    if not 1 <= len(ident.label) <= 64 or not ident.label.isprintable():
        out.append("label must be the 1-64 printable characters on the factory label, e.g. 'CC-000123'")
    device_reaches = not loopback_ok
    urls = mqtt_urls(ident.mqtt_url)  # a cluster's nodes: the first, then the ones to fail over to
    for url in urls or [""]:
        out += _url_problems("mqtt url", url, ("mqtt", "mqtts"),
                             "mqtt://192.168.1.10:1883", device_reaches)
    if len({urlsplit(u).scheme for u in urls}) > 1:
        out.append("the broker nodes' URLs must all be mqtt:// or all mqtts:// (one CA for all)")
    if ident.ota_url:
        out += _url_problems("companion url", ident.ota_url, ("http", "https"),
                             "https://192.168.1.10:8443", device_reaches)
    if target == "esp32":
        if ident.mqtt_url.startswith("mqtts://") and not ident.mqtt_ca:
            out.append(
                "mqtts:// needs the CA certificate that signed the broker's: the headset checks "
                "the broker against it; pass --mqtt-ca FILE (PEM or DER)"
            )
        if ident.ota_url.startswith("https://") and not ident.ota_ca:
            out.append(
                "an https:// --ota-url needs the CA certificate that signed the companion's: the "
                "headset checks the update server against it; pass --ota-ca FILE (PEM or DER)"
            )
        ssid = ident.wifi_ssid.encode()
        if not 1 <= len(ssid) <= 32:
            out.append("--wifi SSID is required for a headset and must be 1-32 bytes long")
        pw = ident.wifi_password
        if pw and not (8 <= len(pw) <= 63 or (len(pw) == 64 and _is_hex(pw))):
            out.append(
                f"Wi-Fi password is {len(pw)} characters; WPA2 needs 8-63 characters (or 64 hex "
                "digits). For an open network leave it empty"
            )
        if not ident.ota_url:
            out.append("--ota-url is required for a headset (where it fetches updates), e.g. "
                       "http://192.168.1.10:8000")
        out += settings_problems(ident.settings)
    return out


def _is_hex(s: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in s)


def settings_problems(settings: dict[str, Any]) -> list[str]:
    """The initial config.json, checked by the firmware's own validator (and the cue policy's)."""
    if not settings:
        return []
    try:
        from firmware.headset import config as device_config
    except ImportError:
        return []
    policy_check = None
    try:
        from firmware.core.cue_settings import validate_settings

        def policy_check(p: dict[str, Any]) -> list[str]:
            # what firmware/headset/app.py applies (pipeline.policy_settings, which imports device-only
            # modules): the policy table with a headset's attribution
            return list(validate_settings({**p, "attribution": "headset"})[1])
    except ImportError:
        pass
    return [f"settings: {p}" for p in device_config.problems(settings, policy_check)]


# ---- the bundle -----------------------------------------------------------------------------


# An update's or a provisioning's ROMFS image, as a file of the bundle (firmware/headset/ota.py IMAGE);
# on the device it goes into the romfs partition, and <slot>/romfs.json names it.
IMAGE = "romfs.img"
IMAGE_RECORD = "romfs.json"


@dataclass(frozen=True)
class Bundle:
    version: str
    files: dict[str, bytes]  # path inside the slot -> content (IMAGE: the ROMFS image)


def load_bundle(path: Path, model: Path | None = None, image: bool = False) -> Bundle:
    """Read build/firmware (manifest.json + files) and check every file against the manifest.
    `image`: the bundle as `make firmware` also wrote it, its ROMFS image beside the folder
    (build/firmware.romfs) with the files that stay outside it (main.py)."""
    manifest_path = path / "manifest.json"
    if not manifest_path.exists():
        raise ProvisionError([f"{manifest_path} not found; build the bundle with `make firmware`"])
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError as e:
        raise ProvisionError([f"{manifest_path} is not valid JSON ({e}); rebuild with `make firmware`"]) from None
    entries = manifest.get("files", {})
    if isinstance(entries, list):  # [{"path":..., "sha256":...}]
        entries = {e["path"]: e for e in entries}
    files: dict[str, bytes] = {}
    problems = []
    for rel, meta in entries.items():
        want = meta if isinstance(meta, str) else meta.get("sha256")
        f = path / rel
        if not f.is_file():
            problems.append(f"bundle file {rel} is listed in the manifest but missing; rebuild with `make firmware`")
            continue
        data = f.read_bytes()
        if hashlib.sha256(data).hexdigest() != want:
            problems.append(f"bundle file {rel} does not match its manifest hash; rebuild with `make firmware`")
        files[rel] = data
    if model is not None:
        if not model.is_file():
            problems.append(f"model file {model} not found; export it with `calmcue model export`")
        else:
            files[model.name] = model.read_bytes()
    if image and not problems:
        files = _with_image(path, manifest, files, problems)
    if problems:
        raise ProvisionError(problems)
    version = str(manifest.get("version") or hashlib.sha256(
        json.dumps(sorted((p, hashlib.sha256(d).hexdigest()) for p, d in files.items())).encode()
    ).hexdigest()[:12])
    return Bundle(version, files)


def _with_image(path: Path, manifest: dict[str, Any], files: dict[str, bytes],
                problems: list[str]) -> dict[str, bytes]:
    from firmware.tools.bundle import romfs_paths

    image_path, meta_path = romfs_paths(path)
    rebuild = "; rebuild with `make firmware`"
    try:
        meta = json.loads(meta_path.read_text())
        data = image_path.read_bytes()
    except (OSError, ValueError) as e:
        problems.append(f"no ROMFS image beside {path} ({e}){rebuild}")
        return files
    if hashlib.sha256(data).hexdigest() != meta.get("image_sha256"):
        problems.append(f"{image_path} does not match its manifest hash{rebuild}")
    if meta.get("bundle_sha256") != manifest.get("bundle_sha256"):
        problems.append(f"{image_path} was made from another bundle than {path}{rebuild}")
    out = {p: d for p, d in files.items() if p not in meta.get("files", {})}
    if "main.py" not in out:  # MicroPython runs /main.py from the filesystem, never from /rom
        problems.append(f"{meta_path} puts main.py in the image{rebuild}")
    out[IMAGE] = data
    return out


# ---- ESP32 ----------------------------------------------------------------------------------


def mqtt_urls(value: str) -> list[str]:
    """`--mqtt URL[,URL...]`: one broker, or a cluster's nodes (the first, then the others)."""
    return [u.strip() for u in value.split(",") if u.strip()]


def read_ca(path: Path, option: str = "--mqtt-ca") -> bytes:
    """A CA certificate file (PEM or DER) as DER, what the headset's TLS loads."""
    import ssl

    try:
        data = path.read_bytes()
    except OSError as e:
        raise ProvisionError([f"{option} {path}: {e.strerror}"]) from None
    if b"-----BEGIN CERTIFICATE-----" in data:
        try:
            return ssl.PEM_cert_to_DER_cert(data.decode("ascii"))
        except ValueError as e:
            raise ProvisionError([f"{option} {path}: not a PEM certificate ({e})"]) from None
    if not data.startswith(b"\x30"):  # a DER certificate is an ASN.1 SEQUENCE
        raise ProvisionError([f"{option} {path}: neither a PEM nor a DER certificate"])
    return data


def device_id_from_uid(uid_hex: str) -> str:
    """The device id used in topics and the inventory: stable, derived from the chip id."""
    return "cc-" + uid_hex.lower()[-12:]


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True).encode()


@dataclass
class Result:
    device: str
    version: str
    files: dict[str, str]

    @property
    def changed(self) -> int:
        return sum(1 for v in self.files.values() if v != "same")


def key_fingerprint(key: dict[str, Any]) -> str:
    """What IT compares by eye: the first 16 hex digits of SHA-256 over the modulus."""
    return hashlib.sha256(bytes.fromhex(str(key.get("n", "")))).hexdigest()[:16]


def read_update_key(path: Path) -> dict[str, Any]:
    """ota_key.json as `calmcue device ota-key --out FILE` wrote it on the companion host."""
    try:
        key = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ProvisionError([f"--ota-key {path}: {e}"]) from None
    n = key.get("n") if isinstance(key, dict) else None
    if (not isinstance(key, dict) or key.get("alg") != "rsa-pkcs1v15-sha256"
            or not isinstance(n, str) or not _is_hex(n) or len(n) < 512
            or not isinstance(key.get("e"), int)):
        raise ProvisionError([f"--ota-key {path}: not an update key (want the JSON that "
                              "`calmcue device ota-key --out FILE` writes on the companion host: "
                              '{"alg": "rsa-pkcs1v15-sha256", "n": hex, "e": 65537}, 2048 bits '
                              "or more)"])
    return {"alg": key["alg"], "n": n, "e": key["e"]}


def update_key(fleet: Fleet, path: Path | None) -> dict[str, Any]:
    """The update-signing key the device will trust for good, never taken from the network: from
    the file IT brought from the companion host (`--ota-key FILE`), or with `--db` from the
    signing key on this machine. A key fetched from `--companion URL` (plain HTTP on a store
    network) could be anyone's, and the device would then install their updates; so there the
    file is required and the companion's answer is only compared with it."""
    from firmware.tools.fleet_client import DbFleet

    if path is None:
        if not isinstance(fleet, DbFleet):
            raise ProvisionError([
                "--ota-key FILE is required with --companion: the device trusts this key for "
                "every update, so it is not fetched over the network; on the companion host run "
                "`calmcue device ota-key --out ota_key.json` and bring the file"])
        return fleet.public_key()
    key = read_update_key(path)
    served = fleet.public_key()
    if served != key:
        raise ProvisionError([
            f"--ota-key {path} (fingerprint {key_fingerprint(key)}) is not the key the fleet "
            f"records sign with (fingerprint {key_fingerprint(served)}): the file comes from "
            "another companion, or something between here and the companion changed its "
            "answer; nothing was written"])
    return key


def provision_esp32(port: str, ident: Identity, bundle: Bundle, fleet: Fleet, *,
                    loopback_ok: bool = False, reboot: bool = True, ota_key: Path | None = None,
                    log: Callable[[str], None] = print) -> Result:
    problems = validate(ident, target="esp32", loopback_ok=loopback_ok)
    if problems:
        raise ProvisionError(problems)
    key = update_key(fleet, ota_key)  # before touching the device
    log(f"update key {key_fingerprint(key)}" + (f" from {ota_key}" if ota_key else ""))
    with DeviceLink(port) as link:
        device = device_id_from_uid(link.unique_id())
        log(f"device {device} on {port}: uploading bundle {bundle.version} ({len(bundle.files)} files)")
        files = {f"{SLOT}/{p}": d for p, d in bundle.files.items() if p != IMAGE}
        image = bundle.files.get(IMAGE)
        if image is not None:
            report_image = put_image(link, image, log)
        else:  # a folder bundle: no record, so the loader mounts no image for slot a
            link.remove(f"{SLOT}/{IMAGE_RECORD}")
        files["boot.py"] = OTA_BOOT.read_bytes()
        files["main.py"] = ROOT_MAIN
        files["ota_key.json"] = _json_bytes(key)
        if ident.mqtt_ca:
            files[CA_FILE] = ident.mqtt_ca
        if ident.ota_ca:
            files[OTA_CA_FILE] = ident.ota_ca
        if ident.settings:
            files["config.json"] = _json_bytes(ident.settings)
        report = put_tree(link, files, log)
        bad = verify_tree(link, files)
        if bad:
            raise ProvisionError(["verification on the device failed:", *bad])
        if image is not None:
            report[f"{SLOT}/{IMAGE}"] = report_image
        # Point the loader at slot a (a re-provisioned device starts clean on this bundle).
        pointer = {"active": SLOT, "state": "good", "boots": 0, "version": bundle.version}
        link.write_file("ota.json", _json_bytes(pointer))
        fleet.record(device=device, site=ident.site, name=ident.name, label=ident.label,
                     profile=ident.profile, target="esp32", version=bundle.version)
        creds = fleet.mqtt_account(site=ident.site, device=device)
        # after record: a new provisioning time gives the device a new report key
        creds["ota_report_key"] = fleet.report_key(device)
        link.write_file(DEVICE_FILE, _json_bytes(device_document(ident, device, creds)))
        log(f"recorded label {ident.label!r} = device {device} at site {ident.site}")
        if reboot:
            link.reset()
            log("rebooted")
    return Result(device, bundle.version, report)


# Run on the board: its romfs partition as firmware/headset/ota_boot.py finds it (the unix port's is the
# host fake, firmware/host/romflash.py), or None.
_ROM_HELPERS = """
def _seg():
    import vfs
    io = getattr(vfs, 'rom_ioctl', None)
    if io is None:
        try:
            from romflash import rom_ioctl as io
        except ImportError:
            return None
    s = io(2, 0) if io(1) > 0 else None
    return None if isinstance(s, int) else s
seg = _seg()
def _rh(n):
    print(binascii.hexlify(hashlib.sha256(memoryview(seg)[:n]).digest()).decode())
"""


def put_image(link: DeviceLink, image: bytes, log: Callable[[str], None] | None = None,
              chunk: int = 1024) -> str:
    """Write the ROMFS image into slot a's half of the board's romfs partition (left alone when
    it is already there and named), check it by SHA-256 read back on the device, then write
    a/romfs.json. Returns what happened, as put_tree does per file."""
    import base64

    want = hashlib.sha256(image).hexdigest()
    record = _json_bytes({"sha256": want, "size": len(image)})
    link.exec(_ROM_HELPERS)
    if not link.eval_json("seg is not None"):
        raise ProvisionError([
            "the board has no romfs partition (MicroPython >= 1.25 built with a partition table "
            "that has one, docs/firmware.md 'Code in flash'); flash such a build, or provision "
            "without --image to run the bundle from folders"])
    half = link.eval_json("seg.ioctl(4, 0) // 2 * seg.ioctl(5, 0)")
    block = link.eval_json("seg.ioctl(5, 0)")
    if len(image) > half:
        raise ProvisionError([
            f"the image is {len(image)} bytes; half of the board's romfs partition holds {half} "
            "(two images, slot a's and slot b's, for updates); flash a build whose romfs "
            f"partition is at least {2 * -(-len(image) // block) * block} bytes"])
    path = f"{SLOT}/{IMAGE_RECORD}"
    if link.read_file(path) == record and link.exec(f"_rh({len(image)})").strip() == want:
        return "same"
    was = "written" if link.read_file(path) is None else "rewritten"
    # The record goes first: a board that loses power while its half is erased and written
    # finds no record for slot a, mounts nothing, and the next run of this command finishes.
    link.remove(path)
    link.exec("import vfs\ntry:\n vfs.umount('/rom')\nexcept OSError:\n pass")
    for b in range(-(-len(image) // block)):
        link.exec(f"seg.ioctl(6, {b})")
    link.exec("a2b=binascii.a2b_base64")
    for i in range(0, len(image), chunk):
        data = base64.b64encode(image[i : i + chunk])
        link.exec(f"seg.writeblocks({i // block}, a2b({data!r}), {i % block})")
    got = link.exec(f"_rh({len(image)})").strip()
    if got != want:
        raise DeviceError(
            f"{SLOT}/{IMAGE}: read back from the romfs partition, SHA-256 {got}, but {want} was "
            "sent; the data was damaged on the way or the flash is failing. Check the cable and "
            "port, then run the command again")
    link.write_file(path, record)
    if log:
        log(f"  {SLOT}/{IMAGE}: {was} ({len(image)} bytes into the romfs partition)")
    return was


def device_document(ident: Identity, device: str, creds: dict[str, str]) -> dict[str, Any]:
    """device.json: who the device is and how it reaches the store network; the keys are the
    firmware's (docs/firmware.md, "Files on the device's flash")."""
    first, *others = mqtt_urls(ident.mqtt_url)
    mqtt = urlsplit(first)
    tls = mqtt.scheme == "mqtts"
    port = 8883 if tls else 1883
    # the other nodes of a clustered broker, tried in turn when a node fails (docs/cluster.md)
    fallback = [[urlsplit(u).hostname, urlsplit(u).port or port] for u in others]
    return {
        "v": 1,
        "site": ident.site,
        "device": device,
        "name": ident.name,
        "label": ident.label,
        "profile": ident.profile,
        "wifi": {"ssid": ident.wifi_ssid, "password": ident.wifi_password},
        "mqtt": {"host": mqtt.hostname, "port": mqtt.port or port,
                 "ssl": tls, "user": creds["username"], "password": creds["password"],
                 **({"ca": CA_FILE} if tls else {}), **({"fallback": fallback} if fallback else {})},
        "ota_url": ident.ota_url,
        # signs the device's update reports (firmware/headset/ota.py report); from the companion
        **({"ota_report_key": creds["ota_report_key"]} if creds.get("ota_report_key") else {}),
        **({"ota_ca": OTA_CA_FILE} if ident.ota_url.startswith("https://") else {}),
    }


def check_esp32(port: str, bundle: Bundle) -> list[str]:
    """What differs on the device from the bundle (tampered or corrupt files, an image that is
    not the bundle's); nothing written."""
    with DeviceLink(port) as link:
        out = verify_tree(link, {f"{SLOT}/{p}": d for p, d in bundle.files.items() if p != IMAGE}
                          | {"boot.py": OTA_BOOT.read_bytes(), "main.py": ROOT_MAIN})
        image = bundle.files.get(IMAGE)
        if image is not None:
            want = hashlib.sha256(image).hexdigest()
            link.exec(_ROM_HELPERS)
            got = link.exec(f"_rh({len(image)})").strip() if link.eval_json("seg is not None") else None
            if link.read_file(f"{SLOT}/{IMAGE_RECORD}") != _json_bytes({"sha256": want,
                                                                        "size": len(image)}):
                out.append(f"{SLOT}/{IMAGE_RECORD}: does not name the bundle's image")
            if got != want:
                out.append(f"{SLOT}/{IMAGE}: SHA-256 in the romfs partition is {got}, expected {want}")
        return out


# ---- Raspberry Pi ---------------------------------------------------------------------------


class Runner:
    """Runs on the Pi: locally (paths under `root`) or over SSH (`user@host`). Over SSH, a user
    other than root works through `sudo -n` (passwordless sudo for the provisioning account).

    Files it writes are root:`group` 0640 in a root:`group` 0750 folder: the agent runs as the
    unprivileged `calmcue` user (firmware/pi/calmcue-agent.service, created by install.sh), which
    must read its config (it holds the MQTT password) and nothing more."""

    def __init__(self, ssh: str | None = None, root: Path = Path("/"), group: str = "calmcue"):
        self.ssh = ssh
        self.root = root
        self.group = group

    def _no_group(self) -> ProvisionError:
        return ProvisionError([
            f"the Pi has no {self.group!r} group, so the agent's service user could not read its "
            "config; install the agent first (sudo firmware/pi/install.sh creates the user), "
            "then provision"])

    def _gid(self) -> int:
        """The service group's id on the Pi: from its /etc/group (a staged root is an image)."""
        if self.root == Path("/"):
            import grp

            try:
                return grp.getgrnam(self.group).gr_gid
            except KeyError:
                raise self._no_group() from None
        group_file = self.root / "etc" / "group"
        lines = group_file.read_text().splitlines() if group_file.exists() else []
        for line in lines:
            parts = line.split(":")
            if len(parts) >= 3 and parts[0] == self.group and parts[2].isdigit():
                return int(parts[2])
        raise self._no_group()

    def _remote(self, cmd: str, data: str | None = None) -> subprocess.CompletedProcess[str]:
        assert self.ssh is not None
        if not self.ssh.startswith("root@"):
            cmd = "sudo -n sh -c " + shlex.quote(cmd)
        proc = subprocess.run(["ssh", self.ssh, cmd], input=data, text=True, capture_output=True)
        if proc.returncode == 255:  # ssh itself failed
            raise ProvisionError([
                f"cannot reach {self.ssh} over ssh: {proc.stderr.strip()}; check the address and "
                "that `ssh " + self.ssh + "` logs in without a prompt (key-based login)"])
        return proc

    def read(self, path: str) -> str | None:
        if self.ssh is None:
            p = self.root / path.lstrip("/")
            return p.read_text() if p.exists() else None
        proc = self._remote(f"cat {shlex.quote(path)}")
        return proc.stdout if proc.returncode == 0 else None

    def check_group(self) -> None:
        """Refuse before anything is recorded when the agent is not installed on the Pi."""
        if self.ssh is None:
            self._gid()
        elif self._remote(f"getent group {shlex.quote(self.group)}").returncode != 0:
            raise self._no_group()

    def write_atomic(self, path: str, data: str) -> None:
        if self.ssh is None:
            import os

            gid = self._gid()
            p = self.root / path.lstrip("/")
            if not p.parent.exists():
                p.parent.mkdir(parents=True)
                os.chown(p.parent, 0, gid)
                p.parent.chmod(0o750)
            tmp = p.with_suffix(p.suffix + ".tmp")
            tmp.touch(0o600)
            tmp.chmod(0o600)  # not readable by anyone else while it is written
            tmp.write_text(data)
            os.chown(tmp, 0, gid)
            tmp.chmod(0o640)
            tmp.replace(p)
            return
        q, d, g = shlex.quote(path), shlex.quote(str(Path(path).parent)), shlex.quote(self.group)
        proc = self._remote(
            f"getent group {g} >/dev/null || exit 3; "
            f"if [ ! -d {d} ]; then mkdir -p {d} && chgrp {g} {d} && chmod 0750 {d}; fi && "
            f"umask 077 && cat > {q}.tmp && chgrp {g} {q}.tmp && chmod 0640 {q}.tmp && "
            f"mv {q}.tmp {q}", data)
        if proc.returncode == 3:
            raise self._no_group()
        if proc.returncode != 0:
            raise ProvisionError([
                f"writing {path} on {self.ssh} failed: {proc.stderr.strip()}; the account needs "
                "root or passwordless sudo"])

    def restart_agent(self) -> None:
        if self.ssh is not None:
            self._remote("systemctl restart calmcue-agent")
        elif self.root == Path("/"):  # never restart this machine's service for a staged root
            subprocess.run(["systemctl", "restart", "calmcue-agent"], check=False)


PI_CONFIG = "/etc/calmcue/agent.json"


def pi_unique_id(runner: Runner) -> str:
    """The Pi's serial number from the SoC (as /proc/cpuinfo reports it), else the machine id."""
    cpuinfo = runner.read("/proc/cpuinfo") or ""
    for line in cpuinfo.splitlines():
        if line.lower().startswith("serial"):
            return line.split(":", 1)[1].strip().lower()
    machine_id = (runner.read("/etc/machine-id") or "").strip()
    if not machine_id:
        raise ProvisionError(["cannot read the Pi's serial number (/proc/cpuinfo) or /etc/machine-id"])
    return machine_id


def provision_pi(runner: Runner, ident: Identity, fleet: Fleet, *, restart: bool = True,
                 log: Callable[[str], None] = print) -> Result:
    from firmware.pi import config as agent_config

    problems = validate(ident, target="pi", loopback_ok=True)
    if problems:
        raise ProvisionError(problems)
    device = device_id_from_uid(pi_unique_id(runner))
    raw: dict[str, Any] = {"site": ident.site, "device": device,
                           "mqtt": {"url": mqtt_urls(ident.mqtt_url)[0], "username": device,
                                    "password": "x" * 24,
                                    "fallback_urls": mqtt_urls(ident.mqtt_url)[1:]}}
    if ident.settings:
        raw.update(ident.settings)
    try:
        agent_config.build(raw, "agent config")  # refuse before any record or file changes
    except agent_config.ConfigError as e:
        raise ProvisionError(e.problems) from None
    runner.check_group()
    fleet.record(device=device, site=ident.site, name=ident.name, label=ident.label,
                 profile=ident.profile, target="pi", version=None)
    creds = fleet.mqtt_account(site=ident.site, device=device)
    raw["mqtt"] = {**raw["mqtt"], "username": creds["username"], "password": creds["password"]}
    runner.write_atomic(PI_CONFIG, json.dumps(raw, indent=2, sort_keys=True))
    log(f"recorded label {ident.label!r} = device {device} at site {ident.site}; wrote {PI_CONFIG}")
    if restart:
        runner.restart_agent()
    return Result(device, "", {PI_CONFIG: "written"})


def _must_be_id(name: str, value: object) -> str | None:
    why = events.must_be("id", None, value)
    return None if why is None else f"{name} must be {why}"
