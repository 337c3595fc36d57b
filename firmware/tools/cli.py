"""`calmcue device ...`: IT bench and fleet tools (flash, provision, register, update, list,
status). Heavy imports happen inside each command so `calmcue --help` stays fast."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_BUNDLE = "build/firmware"


def _fleet_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where the fleet records live (one of)")
    g.add_argument("--companion", metavar="URL",
                   help="companion base URL (env CALMCUE_COMPANION_URL; token in CALMCUE_API_TOKEN)")
    g.add_argument("--db", metavar="URL", help="the companion's database URL (env CALMCUE_DB_URL)")
    g.add_argument("--key", metavar="PEM", help="update signing key with --db "
                   "(default: the companion's, CALMCUE_FLEET_KEY_PATH under CALMCUE_DATA_DIR, "
                   "i.e. var/fleet/ota_signing_key.pem; created on first use)")


def _fleet(args: argparse.Namespace) -> Any:
    from firmware.tools.fleet_client import connect

    return connect(args.companion, args.db, args.key)


def register(sub: Any) -> None:
    p = sub.add_parser("device", help="IT: flash, provision, register, update, list devices")
    dsub = p.add_subparsers(dest="device_command", metavar="COMMAND", required=True)

    f = dsub.add_parser("flash", help="write the MicroPython firmware image with esptool")
    f.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyACM0")
    f.add_argument("--board", default="esp32s3", help="esp32s3 (default) or esp32")
    f.add_argument("--image", type=Path,
                   help="MicroPython .bin for the board (default: the one in var/firmware/)")
    f.add_argument("--baud", type=int, default=460800)
    f.set_defaults(func=cmd_flash)

    v = dsub.add_parser("provision", help="upload bundle + config, record label <-> device id")
    v.add_argument("--target", choices=("esp32", "pi"), default="esp32")
    v.add_argument("--port", help="serial port of an ESP32 board")
    v.add_argument("--ssh", metavar="USER@HOST", help="a Pi over SSH (--target pi)")
    v.add_argument("--root", type=Path, default=Path("/"), help="a Pi's root folder, locally")
    v.add_argument("--service-group", default="calmcue", metavar="GROUP",
                   help="the group the Pi agent runs as (install.sh creates calmcue); its config "
                   "is written root:GROUP 0640")
    v.add_argument("--profile", default=None, help="esp32s3-headset or pi-counter")
    v.add_argument("--site", default="")
    v.add_argument("--name", default="", help="the device's name at the site, e.g. counter-2")
    v.add_argument("--label", help="the factory label on the box (default: --name)")
    v.add_argument("--wifi", default="", metavar="SSID")
    v.add_argument("--wifi-password", default=os.environ.get("CALMCUE_WIFI_PASSWORD", ""),
                   help="(or env CALMCUE_WIFI_PASSWORD, kept out of shell history)")
    v.add_argument("--mqtt", default="", metavar="URL",
                   help="broker as the device reaches it; a cluster: its nodes' URLs, "
                        "comma-separated (the device fails over between them)")
    v.add_argument("--mqtt-ca", type=Path, metavar="FILE",
                   help="with mqtts://: the CA certificate (PEM or DER) that signed the broker's; "
                   "the headset checks the broker against it")
    v.add_argument("--ota-url", default="", metavar="URL",
                   help="companion as the device reaches it, for updates (http://HOST:PORT, "
                   "or https://HOST:PORT with --ota-ca)")
    v.add_argument("--ota-ca", type=Path, metavar="FILE",
                   help="with an https:// --ota-url: the CA certificate (PEM or DER) that signed "
                   "the companion's; the headset checks the update server against it")
    v.add_argument("--ota-key", type=Path, metavar="FILE",
                   help="the update-signing public key, as `calmcue device ota-key --out FILE` "
                   "wrote it on the companion host; required with --companion (the device trusts "
                   "it for every update, so it is never fetched over the network)")
    v.add_argument("--bundle", type=Path, default=Path(DEFAULT_BUNDLE))
    v.add_argument("--model", type=Path, help="extra model file to upload with the bundle")
    v.add_argument("--image", action="store_true",
                   help="carry the bundle's code as its ROMFS image (build/firmware.romfs) into "
                   "the board's romfs partition (MicroPython >= 1.25; docs/firmware.md)")
    v.add_argument("--settings", type=Path, help="initial device settings (JSON), validated")
    v.add_argument("--broker-dir", type=Path, help="rewrite Mosquitto passwd/acl here afterwards")
    v.add_argument("--allow-loopback", action="store_true",
                   help="accept 127.0.0.1 URLs (a simulated board on this machine)")
    v.add_argument("--no-reboot", action="store_true")
    v.add_argument("--check", action="store_true",
                   help="only compare the device's files with the bundle (tampered/corrupt)")
    _fleet_args(v)
    v.set_defaults(func=cmd_provision)

    k = dsub.add_parser("ota-key", help="on the companion host: write the update-signing public "
                        "key for `provision --ota-key` (carry the file; it is not a secret)")
    k.add_argument("--key", metavar="PEM",
                   help="the companion's signing key (default: where its settings put it, "
                   "CALMCUE_FLEET_KEY_PATH under CALMCUE_DATA_DIR, i.e. var/fleet/ota_signing_key.pem)")
    k.add_argument("--out", type=Path, metavar="FILE", help="write here (default: print)")
    k.set_defaults(func=cmd_ota_key)

    r = dsub.add_parser("register", help="MQTT accounts + Mosquitto password and ACL files")
    r.add_argument("--site", help="with --device: create or rotate this device's account")
    r.add_argument("--device")
    r.add_argument("--companion-account", action="store_true",
                   help="create or rotate the companion's own broker account ('companion')")
    r.add_argument("--out", type=Path, help="write passwd and acl into this folder")
    _fleet_args(r)
    r.set_defaults(func=cmd_register)

    u = dsub.add_parser("update", help="publish a signed update / stage or pause its roll-out")
    u.add_argument("--bundle", type=Path, help="bundle folder to publish (build/firmware)")
    u.add_argument("--image", action="store_true",
                   help="publish the bundle's code as its ROMFS image (devices with a romfs "
                   "partition; others refuse the update)")
    u.add_argument("--site", help="site the update is for")
    u.add_argument("--version", help="default: the bundle manifest's version")
    u.add_argument("--percent", type=int, help="share of the site's devices offered it (0-100)")
    u.add_argument("--update", metavar="ID", help="an existing update to change or show")
    u.add_argument("--pause", action="store_true")
    u.add_argument("--resume", action="store_true")
    u.add_argument("--rollback", action="store_true",
                   help="pause --update ID and send its devices back to the previous version")
    _fleet_args(u)
    u.set_defaults(func=cmd_update)

    ls = dsub.add_parser("list", help="every device once (provisioned or seen over MQTT): "
                         "label, id, site, version, status, last seen, what needs a look")
    ls.add_argument("--site")
    ls.add_argument("--json", action="store_true")
    _fleet_args(ls)
    ls.set_defaults(func=cmd_list)

    st = dsub.add_parser("status", help="one device: inventory record and update history")
    st.add_argument("device", nargs="?", help="device id (cc-...)")
    st.add_argument("--port", help="instead, read the board on this serial port")
    _fleet_args(st)
    st.set_defaults(func=cmd_status)

    sim = dsub.add_parser("sim", help="a simulated board (MicroPython unix port on a pty) to "
                          "practise on: prints its port, runs until Ctrl-C")
    sim.add_argument("--flash", type=Path, default=Path("var/sim-board"), help="its flash folder")
    sim.add_argument("--uid", default="a0b1c2d3e4f5", help="its chip id (12 hex digits)")
    sim.set_defaults(func=cmd_sim)


def _fail(msg: str, code: int = 1) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return code


def cmd_flash(args: argparse.Namespace) -> int:
    from firmware.tools.flash import FlashError, flash

    try:
        flash(args.port, args.board, args.image, baud=args.baud)
    except FlashError as e:
        return _fail(str(e))
    return 0


def cmd_provision(args: argparse.Namespace) -> int:
    from firmware.tools import provision as pv
    from firmware.tools.devicelink import DeviceError
    from firmware.tools.fleet_client import FleetClientError

    settings: dict[str, Any] = {}
    try:
        if args.settings:
            try:
                settings = json.loads(args.settings.read_text())
            except (OSError, ValueError) as e:
                raise pv.ProvisionError([f"--settings {args.settings}: {e}"]) from None
        profile = args.profile or ("pi-counter" if args.target == "pi" else "esp32s3-headset")
        ident = pv.Identity(site=args.site, name=args.name, label=args.label or args.name,
                            profile=profile, mqtt_url=args.mqtt, wifi_ssid=args.wifi,
                            wifi_password=args.wifi_password, ota_url=args.ota_url,
                            settings=settings,
                            mqtt_ca=pv.read_ca(args.mqtt_ca) if args.mqtt_ca else b"",
                            ota_ca=pv.read_ca(args.ota_ca, "--ota-ca") if args.ota_ca else b"")
        if args.target == "pi":
            problems = pv.validate(ident, target="pi", loopback_ok=True)
            if problems:
                raise pv.ProvisionError(problems)
            result = pv.provision_pi(pv.Runner(args.ssh, args.root, args.service_group), ident,
                                     _fleet(args),
                                     restart=not args.no_reboot)
        else:
            if not args.port:
                raise pv.ProvisionError(["--port is required for an ESP32 (e.g. /dev/ttyACM0)"])
            bundle = pv.load_bundle(args.bundle, args.model, image=args.image)
            if args.check:
                bad = pv.check_esp32(args.port, bundle)
                for line in bad:
                    print(line)
                print("device matches the bundle" if not bad else f"{len(bad)} file(s) differ")
                return 1 if bad else 0
            # validate before connecting to the companion or the board
            problems = pv.validate(ident, target="esp32", loopback_ok=args.allow_loopback)
            if problems:
                raise pv.ProvisionError(problems)
            result = pv.provision_esp32(args.port, ident, bundle, _fleet(args),
                                        loopback_ok=args.allow_loopback,
                                        reboot=not args.no_reboot, ota_key=args.ota_key)
            print(f"provisioned {result.device}: bundle {result.version}, "
                  f"{result.changed} file(s) written")
    except pv.ProvisionError as e:
        return _fail(str(e), 2)
    except (DeviceError, FleetClientError) as e:
        return _fail(f"{e}\nnothing is lost: run the same command again to finish")
    if args.broker_dir:
        _write_broker_files(_fleet(args), args.broker_dir)
    return 0


def _write_broker_files(fleet: Any, out: Path) -> None:
    files = fleet.broker_files()
    out.mkdir(parents=True, exist_ok=True)
    for name in ("passwd", "acl"):
        tmp = out / f"{name}.tmp"
        tmp.write_text(files[name])
        tmp.chmod(0o600 if name == "passwd" else 0o644)
        tmp.replace(out / name)
    print(f"wrote {out / 'passwd'} and {out / 'acl'}; reload the broker to apply them:\n"
          "  sudo systemctl reload mosquitto   (or: kill -HUP $(pidof mosquitto))")
    defs = files.get("rabbitmq-definitions.json")
    if defs is not None:  # the clustered broker's form of the same accounts and rules
        tmp = out / "rabbitmq-definitions.json.tmp"
        tmp.write_text(defs)
        tmp.chmod(0o600)
        tmp.replace(out / "rabbitmq-definitions.json")
        print(f"and {out / 'rabbitmq-definitions.json'} for a clustered broker "
              "(docs/cluster.md): on any one node,\n"
              f"  rabbitmqctl import_definitions {out / 'rabbitmq-definitions.json'}")


def cmd_ota_key(args: argparse.Namespace) -> int:
    """The public half of the companion's update-signing key, read from its file on this host
    (never created here: a new key would not be the one the companion signs with)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from firmware.tools.fleet_client import default_key_path
    from firmware.tools.provision import key_fingerprint

    path = Path(args.key) if args.key else default_key_path()
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        return _fail(f"no signing key at {path}: run this on the companion host, with --key set "
                     "to its CALMCUE_FLEET_KEY_PATH (the companion creates the key when it first "
                     "starts)", 2)
    except (OSError, ValueError, TypeError) as e:
        return _fail(f"{path} is not the companion's signing key: {e}", 2)
    if not isinstance(key, rsa.RSAPrivateKey):
        return _fail(f"{path} is not an RSA key (the devices check RSA PKCS#1 v1.5 signatures)", 2)
    numbers = key.public_key().public_numbers()
    pub = {"alg": "rsa-pkcs1v15-sha256", "n": format(numbers.n, "x"), "e": numbers.e}
    text = json.dumps(pub, indent=2) + "\n"
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}: update key {key_fingerprint(pub)}; give it to "
              "`calmcue device provision --ota-key`", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from firmware.tools.fleet_client import FleetClientError

    try:
        fleet = _fleet(args)
        if args.companion_account:
            creds = fleet.mqtt_account(site=None, device=None, username="companion")
            print(json.dumps(creds))
        elif args.device:
            if not args.site:
                return _fail("--device needs --site", 2)
            creds = fleet.mqtt_account(site=args.site, device=args.device)
            print(json.dumps(creds))
        if args.out:
            _write_broker_files(fleet, args.out)
        if not (args.companion_account or args.device or args.out):
            return _fail("nothing to do: give --site/--device, --companion-account or --out", 2)
    except FleetClientError as e:
        return _fail(str(e))
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    from firmware.tools.fleet_client import FleetClientError

    try:
        fleet = _fleet(args)
        if args.bundle:
            from firmware.tools.provision import ProvisionError, load_bundle

            if not args.site:
                return _fail("--site is required to publish an update", 2)
            try:
                bundle = load_bundle(args.bundle, image=args.image)
            except ProvisionError as e:
                return _fail(str(e), 2)
            out = fleet.create_update(version=args.version or bundle.version, site=args.site,
                                      percent=100 if args.percent is None else args.percent,
                                      files=bundle.files)
        elif args.update and args.rollback:
            out = fleet.rollback(args.update)
        elif args.update:
            if args.percent is not None or args.pause or args.resume:
                state = "paused" if args.pause else "active" if args.resume else None
                out = fleet.set_rollout(args.update, percent=args.percent, state=state)
            else:
                out = fleet.update_summary(args.update)
        else:
            out = fleet.list_updates()
    except (FleetClientError, KeyError, ValueError) as e:
        return _fail(str(e))
    print(json.dumps(out, indent=2, default=str))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from firmware.tools.fleet_client import FleetClientError

    try:
        rows = _fleet(args).inventory(args.site)
    except FleetClientError as e:
        return _fail(str(e))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    import time

    now = time.time()
    for r in rows:  # one record per device (companion/fleet_view.py), as the IT screen shows
        r["last seen"] = _ago(now - r["last_seen"]) if r.get("last_seen") else None
        r["flags"] = "; ".join(f["text"] for f in r.get("flags") or [])
    cols = ("label", "device", "site", "name", "profile", "version", "status", "last seen",
            "firmware", "flags")
    widths = [max([len(c)] + [len(str(r.get(c) or "")) for r in rows]) for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  ".join(str(r.get(c) or "-").ljust(w) for c, w in zip(cols, widths, strict=True)))
    return 0


def _ago(seconds: float) -> str:
    """"3 min ago", as the IT screen says it."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s ago"
    if s < 3600:
        return f"{s // 60} min ago"
    if s < 86400:
        return f"{s // 3600} h ago"
    return f"{s // 86400} d ago"


def cmd_status(args: argparse.Namespace) -> int:
    from firmware.tools.devicelink import DeviceError, DeviceLink
    from firmware.tools.fleet_client import FleetClientError

    if args.port:
        try:
            with DeviceLink(args.port) as link:
                ident = json.loads(link.read_file("device.json") or b"{}")
                ident.get("mqtt", {}).pop("password", None)
                ident.get("wifi", {}).pop("password", None)
                ident.pop("ota_report_key", None)
                out = {"device": ident, "ota": json.loads(link.read_file("ota.json") or b"{}")}
        except (DeviceError, ValueError) as e:
            return _fail(str(e))
        print(json.dumps(out, indent=2))
        return 0
    if not args.device:
        return _fail("give a device id, or --port to read a board", 2)
    try:
        found = _fleet(args).device(args.device)
    except FleetClientError as e:
        return _fail(str(e))
    if found is None:
        return _fail(f"device {args.device} is not in the inventory nor seen over MQTT; "
                     "`calmcue device list` shows the ones the companion knows")
    print(json.dumps(found, indent=2, default=str))
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    import signal
    import time

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # stop the interpreter too when terminated

    from firmware.tools.simdevice import SimulatedBoard

    with SimulatedBoard(args.flash, unique_id=args.uid) as board:
        print(f"simulated board cc-{args.uid} on {board.port} (flash: {args.flash}); Ctrl-C stops",
              flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            return 0
