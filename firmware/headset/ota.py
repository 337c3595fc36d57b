# Over-the-air updates on the device: check, download, verify, switch, confirm.
#
# The companion signs each bundle manifest (the exact JSON bytes) with RSA-2048 PKCS#1 v1.5 over
# SHA-256. Why RSA and not Ed25519: MicroPython has no Ed25519 and no SHA-512; verifying
# RSA with e=65537 is one three-argument pow() on big ints (17 modular multiplications, under a
# millisecond on the unix port) plus the native hashlib.sha256, so the verifier is ~20 lines with
# nothing hand-rolled that could be subtly wrong. The expected PKCS#1 block is rebuilt and
# compared whole, so there is no padding parser to attack.
#
# The answer to an update check (the offer) is signed the same way and names this device, its
# site and a random nonce the device sent with the check, so an old offer replayed by someone on
# the network is refused; an offered version not above this device's confirmed one is refused
# before anything is downloaded (anti-rollback, floor_version), and again for the manifest.
# Reports to the companion carry an HMAC-SHA256 of their body under the device's own report key
# (device.json ota_report_key, issued at provisioning): nobody else can report for it.
# https:// update URLs check the server's certificate against the CA provisioned on flash
# (device.json ota_ca, firmware/headset/tls.py), as the MQTT link does.
#
# Files are written into the inactive slot (see ota_boot.py), each hashed while it streams to
# flash and renamed into place only when its SHA-256 matches the signed manifest; then the
# pointer is switched with state "trial". The new bundle calls confirm() once healthy.
# An update may carry the bundle's code as a ROMFS image (the file IMAGE in its manifest):
# firmware/headset/ota_image.py, loaded only then, writes it into the inactive slot's half of the romfs
# partition and names it in <slot>/romfs.json.
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
IMAGE = "romfs.img"  # the ROMFS image in an update's manifest (written to flash, not a file)
_CHUNK = const(512)
# Every connect, send and read of an update waits at most this long: a companion that accepts
# and stalls ends the update with OSError (ETIMEDOUT) instead of freezing the device for good.
_TIMEOUT_S = const(10)
# Called after every chunk of a download (firmware/headset/app.py Device._update sets it to the watchdog's feed):
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


# ---- a small HTTP/1.0 client (http://, or https:// with the provisioned CA) ------------------

# The CA file (DER, on flash) that signed the update server's certificate; https:// needs it.
# update_from_companion() and report_outcome() set it from device.json's ota_ca.
ca = None


def _split(url):
    tls = url.startswith("https://")
    if not tls and not url.startswith("http://"):
        raise OtaError("only http:// and https:// URLs are supported: " + url)
    rest = url[8 if tls else 7:]
    i = rest.find("/")
    hostport, path = (rest, "/") if i < 0 else (rest[:i], rest[i:])
    host, port = hostport, 443 if tls else 80
    if ":" in hostport:
        host, p = hostport.split(":")
        port = int(p)
    return tls, host, port, path


def _request(method, url, body=None, sink=None, head=""):
    """Returns (status, body bytes); with `sink`, body chunks go to sink(memoryview) instead.
    `head`: extra header lines, each ending in CRLF."""
    tls, host, port, path = _split(url)
    if tls and not ca:
        raise OtaError("https:// update URL without ota_ca in device.json; provision with --ota-ca")
    addr = socket.getaddrinfo(host, port)[0][-1]
    s = socket.socket()
    try:
        s.settimeout(_TIMEOUT_S)  # before connect: a silent server cannot hold us
        s.connect(addr)
        if tls:
            from firmware.headset.tls import wrap

            # the handshake runs on the first write; a certificate the CA did not sign fails it
            s = wrap(s, {"host": host, "ca": ca}, "")
        head = "%s %s HTTP/1.0\r\nHost: %s\r\n%s" % (method, path, host, head)
        if body is not None:
            head += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        # A MicroPython socket is a stream itself. (The unix port's makefile() is a second object
        # on the same fd that closes it again when collected, possibly after the fd was reused.)
        f = s if hasattr(s, "readinto") else s.makefile("rwb", 0)
        try:
            f.write(head.encode() + b"\r\n")
        except ValueError as e:  # mbedTLS's handshake failed: not the provisioned CA's server
            raise OtaError("TLS with %s refused: %s" % (host, str(e).strip()))
        if body is not None:
            f.write(body)
        line = f.readline().split()
        if len(line) < 2 or not line[1].isdigit():
            raise OtaError("%s did not answer in HTTP" % host)
        status = int(line[1])
        # Read the body's stated length, not until the server closes: a TLS server may hold
        # the connection open for a while waiting for the client's close_notify.
        left = -1  # unknown: until the end of the stream
        while True:
            line = f.readline()
            if not line or line == b"\r\n":
                break
            if line[:15].lower() == b"content-length:":
                left = int(line[15:])
        buf = bytearray(_CHUNK)
        mv = memoryview(buf)
        out = b"" if sink is None else None
        while left:
            n = f.readinto(mv if left < 0 or left >= _CHUNK else mv[:left])
            if alive is not None:
                alive()
            if not n:
                break
            if left > 0:
                left -= n
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


def hmac_sha256(key, msg):
    """HMAC-SHA256 (RFC 2104); MicroPython has no hmac module."""
    key = key + b"\x00" * (64 - len(key))  # keys here are 32 bytes, below the block size
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    inner.update(msg)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


def report(ident, update, state, detail=""):
    """Tell the companion how an update went, signed with this device's report key; failures to
    report are not fatal (report_outcome tries again at the next boot)."""
    key = ident.get("ota_report_key")
    if not key:
        return False  # provisioned before reports were signed: re-provision to get a key
    body = json.dumps({"site": ident["site"], "device": ident["device"], "update": update,
                       "state": state, "detail": detail}).encode()
    mac = binascii.hexlify(hmac_sha256(binascii.unhexlify(key), body)).decode()
    head = "X-Calmcue-Device: %s\r\nX-Calmcue-Signature: %s\r\n" % (ident["device"], mac)
    try:
        return _request("POST", ident["ota_url"] + "/fleet/ota/report", body, head=head)[0] == 200
    except (OSError, OtaError):
        return False


def _check_floor(p, update, version):
    # Anti-rollback: a genuinely signed older bundle (replayed, or offered by mistake) could
    # bring back a fixed flaw. Going back is a new version with the old content.
    floor = floor_version(p)
    if _version(version) <= _version(floor):
        raise OtaError("update %s is version %s, not newer than %s on this device "
                       "(anti-rollback); publish the bundle under a higher version"
                       % (update, version, floor))


def check(ident, key_path=KEY_FILE):
    """The signed offer the companion has for this device ({"update": id, "version": v, ...}),
    or None. Raises OtaError when the answer is not signed by the update key, or not the answer
    to this request (another device, another site, an old nonce: a replay)."""
    p = load_pointer()
    nonce = binascii.hexlify(os.urandom(8)).decode()
    url = "%s/fleet/ota/check?site=%s&device=%s&version=%s&nonce=%s" % (
        ident["ota_url"], ident["site"], ident["device"], p.get("version") or "", nonce)
    try:
        answer = json.loads(_get(url))
        raw = answer["offer"].encode()
        sig = binascii.unhexlify(answer["sig"])
    except (KeyError, TypeError, AttributeError, ValueError):
        raise OtaError("the answer to the update check is not a signed offer")
    if not verify(raw, sig, load_key(key_path)):
        raise OtaError("update offer signature is not valid for this device's update key")
    offer = json.loads(raw)
    if (offer.get("nonce"), offer.get("device"), offer.get("site")) != (
            nonce, ident["device"], ident["site"]):
        raise OtaError("update offer is not the answer to this check (replayed, or for another "
                       "device or site)")
    return offer if offer.get("update") else None


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


def apply(ident, update, key, version=None):
    """Download update `update` from the companion at ident["ota_url"], verify, and switch to it
    on trial. `version`: what the signed offer said (the manifest must say the same).

    Raises OtaError (after reporting "refused") and leaves the active slot untouched.
    The caller resets the device afterwards to boot the new bundle.
    """
    root = "%s/fleet/ota/updates/%s" % (ident["ota_url"], update)
    site = ident["site"]
    p = load_pointer()
    if p.get("state") == "trial":
        # the inactive slot is the way back from the bundle on trial: never overwrite it
        raise OtaError("the current bundle is still on trial; it must confirm or roll back first")
    try:
        if version is not None:
            _check_floor(p, update, version)  # before any download
        manifest_bytes = _get(root + "/manifest")
        sig = binascii.unhexlify(_get(root + "/signature").strip())
        if not verify(manifest_bytes, sig, key):
            raise OtaError("manifest signature is not valid for this device's update key")
        manifest = json.loads(manifest_bytes)
        if manifest.get("update") != update:
            raise OtaError("manifest is for update %s, not %s" % (manifest.get("update"), update))
        if manifest.get("site") != site:
            # signed for another site: a valid bundle, but not one IT released here
            raise OtaError("update %s is for site %s, not %s" % (update, manifest.get("site"), site))
        if version is not None and manifest.get("version") != version:
            raise OtaError("manifest is version %s, the offer said %s"
                           % (manifest.get("version"), version))
        _check_floor(p, update, manifest.get("version"))
        slot = "b" if p["active"] == "a" else "a"
        files = manifest["files"]
        image = files.get(IMAGE)
        if image is not None:
            from firmware.headset import ota_image

            seg, start = ota_image.room(slot, image["size"])  # before anything is erased
        _rmtree(slot)  # its image record first: the loader never mounts a half being erased
        os.mkdir(slot)
        for path in files:
            if path.startswith("/") or ".." in path:
                raise OtaError("unsafe path in manifest: " + path)
            if path == IMAGE:
                continue
            dest = slot + "/" + path
            _makedirs(dest)
            _fetch_file(root + "/files/" + path, dest, files[path]["sha256"])
        if image is not None:
            ota_image.write(_request, root + "/files/" + IMAGE, seg, start, slot, image, alive)
    except (OtaError, OSError, ValueError, KeyError) as e:
        report(ident, update, "refused", str(e))
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
    report(ident, update, "applied")
    return manifest.get("version")


def report_outcome(ident):
    """After boot: tell the companion once whether the update was confirmed or rolled back."""
    global ca
    ca = ident.get("ota_ca")
    p = load_pointer()
    if p.get("reported", True) or p.get("state") == "trial" or not p.get("update"):
        return None
    state = "confirmed" if p["state"] == "good" else "rolled_back"
    if report(ident, p["update"], state, p.get("failed_version") or ""):
        p["reported"] = True
        save_pointer(p)
    return state


def update_from_companion(ident, key_path=KEY_FILE):
    """One call for the firmware (on a `cmd/ota` command or a periodic check): fetch and apply
    the update the companion offers this device. Returns the new version (reset the device to
    boot it) or None when there is nothing to do. Raises OtaError when an update was refused."""
    global ca
    if not ident.get("ota_url"):
        return None
    ca = ident.get("ota_ca")
    offer = check(ident, key_path)
    if offer is None:
        return None
    return apply(ident, offer["update"], load_key(key_path), offer.get("version"))
