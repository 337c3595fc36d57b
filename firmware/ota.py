# Over-the-air updates on the device: check, download, verify, switch, confirm.
#
# The companion signs each bundle manifest (the exact JSON bytes) with RSA-2048 PKCS#1 v1.5 over
# SHA-256. Why RSA and not Ed25519: MicroPython has no Ed25519 and no SHA-512; verifying
# RSA with e=65537 is one three-argument pow() on big ints (17 modular multiplications, under a
# millisecond on the unix port) plus the native hashlib.sha256, so the verifier is ~20 lines with
# nothing hand-rolled that could be subtly wrong. The expected PKCS#1 block is rebuilt and
# compared whole, so there is no padding parser to attack.
#
# Files are written into the inactive slot (see ota_boot.py), each hashed while it streams to
# flash and renamed into place only when its SHA-256 matches the signed manifest; then the
# pointer is switched with state "trial". The new bundle calls confirm() once healthy.
import binascii
import hashlib
import json
import os
import socket

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


POINTER = "ota.json"
KEY_FILE = "ota_key.json"
_CHUNK = const(512)
# Every connect, send and read of an update waits at most this long: a companion that accepts
# and stalls ends the update with OSError (ETIMEDOUT) instead of freezing the device for good.
_TIMEOUT_S = const(10)
# Called after every chunk of a download (firmware/control.py sets it to the watchdog's feed):
# a slow download on a busy network must not end in a watchdog reset half-way.
alive = None
# DER prefix of DigestInfo for SHA-256 (RFC 8017, section 9.2 note 1)
_SHA256_INFO = b"\x30\x31\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01\x05\x00\x04\x20"


class OtaError(Exception):
    pass


def load_key(path=KEY_FILE):
    with open(path) as f:
        k = json.load(f)
    return int(k["n"], 16), int(k["e"])


def verify(message, signature, key):
    """True when `signature` is a valid RSA PKCS#1 v1.5 SHA-256 signature of `message`."""
    n, e = key
    size = 0
    t = n
    while t:
        t >>= 8
        size += 1
    if len(signature) != size:
        return False
    s = int.from_bytes(signature, "big")
    if s >= n:
        return False
    em = pow(s, e, n).to_bytes(size, "big")
    t = _SHA256_INFO + hashlib.sha256(message).digest()
    expected = b"\x00\x01" + b"\xff" * (size - len(t) - 3) + b"\x00" + t
    return em == expected


# ---- pointer file (shared format with ota_boot.py) ----------------------------------------


def load_pointer():
    try:
        with open(POINTER) as f:
            p = json.load(f)
        if p.get("active") in ("a", "b"):
            return p
    except (OSError, ValueError):
        pass
    return {"active": "a", "state": "good", "boots": 0}


def save_pointer(p):
    with open(POINTER + ".tmp", "w") as f:
        json.dump(p, f)
    os.rename(POINTER + ".tmp", POINTER)


def confirm():
    """Called by the new bundle once it is healthy (connected, first telemetry sent). Its
    version becomes the anti-rollback floor: no update below it is taken again."""
    p = load_pointer()
    if p.get("state") != "trial":
        return False
    p["state"] = "good"
    p["boots"] = 0
    p["reported"] = False
    try:
        if _version(p.get("version")) > _version(p.get("floor")):
            p["floor"] = p["version"]
    except OtaError:
        pass
    save_pointer(p)
    return True


def _version(v):
    """"2.10.1" -> (2, 10, 1), comparable; None -> () (lowest)."""
    if v is None:
        return ()
    try:
        return tuple(int(x) for x in v.split("."))
    except (AttributeError, ValueError):
        raise OtaError("version %r is not of the form x.y.z" % (v,))


def floor_version(p):
    """The lowest version this device may install next: above the confirmed floor and above
    what it runs now, when that is good (provisioned or confirmed)."""
    f = p.get("floor")
    if p.get("state") != "trial" and _version(p.get("version")) > _version(f):
        f = p.get("version")
    return f


# ---- a small HTTP/1.0 client (the companion serves plain HTTP on the store LAN) -------------


def _split(url):
    if not url.startswith("http://"):
        raise OtaError("only http:// URLs are supported: " + url)
    rest = url[7:]
    i = rest.find("/")
    hostport, path = (rest, "/") if i < 0 else (rest[:i], rest[i:])
    host, port = hostport, 80
    if ":" in hostport:
        host, p = hostport.split(":")
        port = int(p)
    return host, port, path


def _request(method, url, body=None, sink=None):
    """Returns (status, body bytes); with `sink`, body chunks go to sink(memoryview) instead."""
    host, port, path = _split(url)
    addr = socket.getaddrinfo(host, port)[0][-1]
    s = socket.socket()
    try:
        s.settimeout(_TIMEOUT_S)  # before connect: a silent server cannot hold us
        s.connect(addr)
        head = "%s %s HTTP/1.0\r\nHost: %s\r\n" % (method, path, host)
        if body is not None:
            head += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        # A MicroPython socket is a stream itself. (The unix port's makefile() is a second object
        # on the same fd that closes it again when collected, possibly after the fd was reused.)
        f = s if hasattr(s, "readinto") else s.makefile("rwb", 0)
        f.write(head.encode() + b"\r\n")
        if body is not None:
            f.write(body)
        status = int(f.readline().split()[1])
        while True:
            line = f.readline()
            if not line or line == b"\r\n":
                break
        buf = bytearray(_CHUNK)
        mv = memoryview(buf)
        out = b"" if sink is None else None
        while True:
            n = f.readinto(buf)
            if alive is not None:
                alive()
            if not n:
                break
            if sink is None:
                out += bytes(mv[:n])
            else:
                sink(mv[:n])
        return status, out
    finally:
        s.close()


def _get(url):
    status, body = _request("GET", url)
    if status != 200:
        raise OtaError("GET %s -> HTTP %d" % (url, status))
    return body


def report(base, site, device, update, state, detail=""):
    """Tell the companion how an update went; failures to report are not fatal."""
    body = json.dumps(
        {"site": site, "device": device, "update": update, "state": state, "detail": detail}
    ).encode()
    try:
        return _request("POST", base + "/fleet/ota/report", body)[0] == 200
    except OSError:
        return False


def check(base, site, device):
    """The update the companion has for this device ({"update": id, ...}) or None."""
    p = load_pointer()
    url = "%s/fleet/ota/check?site=%s&device=%s&version=%s" % (
        base, site, device, p.get("version") or "")
    info = json.loads(_get(url))
    return info if info.get("update") else None


# ---- download and switch ------------------------------------------------------------------


def _makedirs(path):
    cur = ""
    for part in path.split("/")[:-1]:
        cur = cur + part if not cur else cur + "/" + part
        try:
            os.mkdir(cur)
        except OSError:
            pass


def _rmtree(path):
    try:
        entries = list(os.ilistdir(path))
    except OSError:
        return
    for e in entries:
        full = path + "/" + e[0]
        if e[1] & 0x4000:
            _rmtree(full)
        else:
            os.remove(full)
    os.rmdir(path)


def _fetch_file(url, dest, want_hex):
    tmp = dest + ".part"
    h = hashlib.sha256()
    f = open(tmp, "wb")

    def sink(chunk):
        h.update(chunk)
        f.write(chunk)

    try:
        status, _ = _request("GET", url, sink=sink)
    finally:
        f.close()
    got = binascii.hexlify(h.digest()).decode()
    if status != 200 or got != want_hex:
        os.remove(tmp)
        raise OtaError("%s: hash %s does not match the signed manifest (%s)" % (dest, got, want_hex))
    os.rename(tmp, dest)


def apply(base, update, key, site="", device=""):
    """Download update `update` from the companion at `base`, verify, and switch to it on trial.

    Raises OtaError (after reporting "refused" or "failed") and leaves the active slot untouched.
    The caller resets the device afterwards to boot the new bundle.
    """
    root = "%s/fleet/ota/updates/%s" % (base, update)
    if load_pointer().get("state") == "trial":
        # the inactive slot is the way back from the bundle on trial: never overwrite it
        raise OtaError("the current bundle is still on trial; it must confirm or roll back first")
    try:
        manifest_bytes = _get(root + "/manifest")
        sig = binascii.unhexlify(_get(root + "/signature").strip())
        if not verify(manifest_bytes, sig, key):
            raise OtaError("manifest signature is not valid for this device's update key")
        manifest = json.loads(manifest_bytes)
        if manifest.get("update") != update:
            raise OtaError("manifest is for update %s, not %s" % (manifest.get("update"), update))
        if site and manifest.get("site") != site:
            # signed for another site: a valid bundle, but not one IT released here
            raise OtaError("update %s is for site %s, not %s" % (update, manifest.get("site"), site))
        p = load_pointer()
        # Anti-rollback: a genuinely signed older bundle (replayed, or offered by mistake)
        # could bring back a fixed flaw. Going back is a new version with the old content.
        floor = floor_version(p)
        if _version(manifest.get("version")) <= _version(floor):
            raise OtaError("update %s is version %s, not newer than %s on this device "
                           "(anti-rollback); publish the bundle under a higher version"
                           % (update, manifest.get("version"), floor))
        slot = "b" if p["active"] == "a" else "a"
        _rmtree(slot)
        os.mkdir(slot)
        files = manifest["files"]
        for path in files:
            if path.startswith("/") or ".." in path:
                raise OtaError("unsafe path in manifest: " + path)
            dest = slot + "/" + path
            _makedirs(dest)
            _fetch_file(root + "/files/" + path, dest, files[path]["sha256"])
    except (OtaError, OSError, ValueError, KeyError) as e:
        report(base, site, device, update, "refused", str(e))
        raise OtaError(str(e))
    p["previous"] = p["active"]
    p["previous_version"] = p.get("version")
    p["active"] = slot
    p["version"] = manifest.get("version")
    p["update"] = update
    p["state"] = "trial"
    p["boots"] = 0
    p["reported"] = False
    save_pointer(p)
    report(base, site, device, update, "applied")
    return manifest.get("version")


def report_outcome(base, site, device):
    """After boot: tell the companion once whether the update was confirmed or rolled back."""
    p = load_pointer()
    if p.get("reported", True) or p.get("state") == "trial" or not p.get("update"):
        return None
    state = "confirmed" if p["state"] == "good" else "rolled_back"
    if report(base, site, device, p["update"], state, p.get("failed_version") or ""):
        p["reported"] = True
        save_pointer(p)
    return state


def update_from_companion(ident, key_path=KEY_FILE):
    """One call for the firmware (on a `cmd/ota` command or a periodic check): fetch and apply
    the update the companion offers this device. Returns the new version (reset the device to
    boot it) or None when there is nothing to do. Raises OtaError when an update was refused."""
    base = ident.get("ota_url")
    if not base:
        return None
    info = check(base, ident["site"], ident["device"])
    if info is None:
        return None
    return apply(base, info["update"], load_key(key_path), ident["site"], ident["device"])
