# Wi-Fi and MQTT for the headset, serviced a little at a time so the audio keeps running whatever
# the network does. Both links reconnect with exponential backoff.
#
# Nothing here ever waits on the network: the socket is non-blocking from before connect() (TCP
# and TLS handshake advance on later calls), each service() call reads what has arrived and
# writes what the socket takes, and every wait (CONNACK, PUBACK, PINGRESP) is a deadline checked
# on a later call. A broker that accepts TCP and never answers costs the audio nothing; after
# _ANSWER_MS without an answer the session is dropped and made again, with backoff.
# (umqtt.simple, used before, reads every reply with a blocking read: a silent broker froze the
# single asyncio loop, audio included; it also imports `ussl`, which MicroPython 1.23 removed.)
#
# MQTT 3.1.1, what the headset needs: CONNECT with last will and login, PUBLISH QoS 0/1 out (one
# QoS 1 event in flight), SUBSCRIBE, PUBLISH QoS 0/1 in, PINGREQ. TLS is `ssl.SSLContext` with
# the broker's certificate checked against the CA written at provisioning (device.json
# mqtt.ca, DER); a MicroPython without SSLContext (before 1.22) gets no unchecked link.
import socket
from errno import EINPROGRESS
from time import ticks_add, ticks_diff, ticks_ms  # type: ignore[attr-defined]  # (MicroPython)

from firmware.core.events import TOPIC_ROOT

TYPE_CHECKING = False
if TYPE_CHECKING:  # mypy (make lint) only: MicroPython has no typing
    from typing import Any

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_BACKOFF_MIN_MS = const(1000)
_BACKOFF_MAX_MS = const(60000)
_ANSWER_MS = const(10000)  # CONNACK, PUBACK, a stuck send: no answer in this long, drop
_MSG_MAX = const(2200)  # incoming message kept whole up to this (a config is <= 2048 B)
_TX_MAX = const(2048)  # unsent bytes beyond which a publish is refused (the link is stuck)
_READS = const(8)  # socket reads per service() call: bounded work
_FAILED = const("%s failed: %r")


def _str(s):
    if isinstance(s, str):
        s = s.encode()
    return len(s).to_bytes(2, "big") + s


def _header(first, n):
    # Fixed header: packet type and flags, then the remaining length, 7 bits a byte.
    head = bytearray((first,))
    while True:
        b = n & 0x7F
        n >>= 7
        head.append(b | 0x80 if n else b)
        if not n:
            return head


def _packet(first, body):
    return bytes(_header(first, len(body))) + body


class Link:
    """Wi-Fi station + MQTT session for one device.

    ident: the provisioned identity dict (site, device, wifi{ssid,password}, mqtt{host,port,...};
    mqtt.fallback: the other broker nodes to fail over between, [[host, port], ...]).
    on_message(topic, payload): for config and commands (topics under `prefix`,
    "calmcue/v1/<site>/<device>/"); topic is bytes, payload bytes, or its length (an int) when
    it was longer than _MSG_MAX and was skipped unread.
    acked: QoS 1 publishes the broker has acknowledged, not yet taken by the caller.
    """

    # For mypy (annotations cost nothing in MicroPython): a socket, or an SSL one over it, and
    # ticks_ms values.
    sock: Any
    _deadline: Any
    _tx_since: Any
    _heard: Any

    def __init__(self, wlan, ident, on_message, log=print, root=""):
        self.wlan = wlan
        self.ident = ident
        self.on_message = on_message
        self.log = log
        self.root = root  # where device.json's mqtt.ca file is
        self.prefix = "%s/%s/%s/" % (TOPIC_ROOT, ident["site"], ident["device"])
        self.sock = None
        self.up = False  # an MQTT session is open (CONNACK seen)
        self.connects = 0  # successful MQTT sessions since boot
        self.acked = 0
        self.unacked = 0  # the packet id of the QoS 1 publish in flight, 0: none
        self._wifi_next = 0
        self._wifi_backoff = _BACKOFF_MIN_MS
        self._next = 0  # without a session: the next MQTT try; with one: the next ping
        self._backoff = _BACKOFF_MIN_MS  # MQTT's
        self._poll = None  # while the TCP connect is under way
        self._tx = b""  # bytes the socket has not taken yet
        self._rx = None  # the packet being read: [first byte, length, bytearray, got]
        # Answers are waited for in real time (ticks_ms), whatever time service() is given
        # (the host runner's is audio time, faster than real time).
        self._deadline = 0  # the answer waited for (CONNACK, PUBACK) is due by then
        self._tx_since = 0  # when _tx last went from empty to not
        self._heard = 0  # when the broker last sent anything
        self._pid = 0
        self._now = 0
        wlan.active(True)

    def service(self, now_ms):
        """Bring the links up when due, read what arrived, send what is pending; never waits.
        Returns True when MQTT is up."""
        self._now = now_ms
        if not self.wlan.isconnected():
            if self.sock is not None:
                self.drop("wifi lost")
            if now_ms >= self._wifi_next:
                w = self.ident.get("wifi", {})
                try:
                    self.wlan.connect(w.get("ssid", ""), w.get("password", ""))
                except OSError as e:
                    self.log(_FAILED % ("wifi", e))
                self._wifi_next = now_ms + self._wifi_backoff
                self._wifi_backoff = min(self._wifi_backoff * 2, _BACKOFF_MAX_MS)
            return False
        self._wifi_backoff = _BACKOFF_MIN_MS
        if self.sock is None:
            if now_ms >= self._next:
                self._open()
            return False
        try:
            if self._poll is not None:  # TCP connect under way
                if not self._poll.poll(0):
                    if ticks_diff(ticks_ms(), self._deadline) > 0:
                        raise OSError("no answer from the broker")
                    return False
                self._poll = None
                self._start()
            self._flush()
            self._read()
            t = ticks_ms()
            if self._tx and ticks_diff(t, self._tx_since) > _ANSWER_MS:
                raise OSError("send stalled")
            if not self.up or self.unacked:
                if ticks_diff(t, self._deadline) > 0:
                    raise OSError("no answer from the broker")
            elif now_ms >= self._next:
                keepalive = self.ident.get("mqtt", {}).get("keepalive", 60) * 1000
                if ticks_diff(t, self._heard) > keepalive * 3 // 2:
                    raise OSError("broker silent")
                self._send(b"\xc0\x00")  # PINGREQ: its PINGRESP counts as heard
                self._next = now_ms + keepalive // 2
        except (OSError, ValueError, IndexError, MemoryError) as e:
            # MemoryError: no room for a message's buffer; the stream is then mid-message, so
            # the session goes, as for a broken link, and the device carries on.
            self.fail(e)
        return self.up

    def _open(self):
        m = self.ident.get("mqtt", {})
        try:
            addr = socket.getaddrinfo(m.get("host", "127.0.0.1"), m.get("port", 1883))[0][-1]
            s = self.sock = socket.socket()
            s.setblocking(False)  # before connect: a broker that never answers costs nothing
            try:  # TCP_NODELAY (IPPROTO_TCP 6, option 1 on Linux and lwIP): a publish right
                s.setsockopt(6, 1, 1)  # after another is not held back for the broker's ACK
            except (OSError, TypeError):
                pass
            try:
                s.connect(addr)
            except OSError as e:
                if e.errno != EINPROGRESS:
                    raise
            import select

            self._poll = select.poll()
            self._poll.register(s, select.POLLOUT)
            self._deadline = ticks_add(ticks_ms(), _ANSWER_MS)
        except (OSError, IndexError) as e:
            self.fail(e)

    def _start(self):
        # TCP is up: TLS (the handshake runs inside the reads and writes that follow), then
        # CONNECT; the session counts as up at its CONNACK (_read).
        m = self.ident.get("mqtt", {})
        if m.get("ssl"):  # its code is loaded only then (firmware/headset/tls.py)
            from firmware.headset.tls import wrap

            self.sock = wrap(self.sock, m, self.root)
        flags = 0x02  # clean session
        body = _str(self.ident["device"]) + _str(self.prefix + "status") + _str("offline")
        flags |= 0x2C  # last will, QoS 1, retained: the broker says "offline" if we vanish
        if m.get("user") is not None:
            flags |= 0xC0
            body += _str(m["user"]) + _str(m.get("password") or "")
        ka = m.get("keepalive", 60)
        self._send(_packet(0x10, b"\x00\x04MQTT\x04" + bytes((flags, ka >> 8, ka & 0xFF)) + body))
        self._heard = ticks_ms()
        self._deadline = ticks_add(self._heard, _ANSWER_MS)

    def _send(self, data):
        # Written at once when nothing waits before it (the usual case: no copy made); what the
        # socket does not take waits in _tx for later calls.
        if not self._tx:
            n = self.sock.write(data) or 0
            if n == len(data):
                return
            self._tx_since = ticks_ms()
            data = data[n:]
        self._tx += data

    def _flush(self):
        if self._tx:
            n = self.sock.write(self._tx)
            if n:
                self._tx = self._tx[n:]

    def _read(self):
        for _ in range(_READS):
            r = self._rx
            if r is None:  # a fixed header: first byte, then the remaining length
                b = self.sock.read(1)
                if b is None:
                    return
                if not b:
                    raise OSError("broker closed the connection")
                self._heard = ticks_ms()
                self._rx = [b[0], 0, None, 0]
                continue
            if r[2] is None:  # remaining length, 7 bits a byte
                b = self.sock.read(1)
                if b is None:
                    return
                if not b:
                    raise OSError("broker closed the connection")
                r[1] |= (b[0] & 0x7F) << r[3]
                r[3] += 7
                if b[0] & 0x80:
                    continue
                r[2] = bytearray(min(r[1], _MSG_MAX))
                r[3] = 0
            buf = r[2]
            if r[3] < r[1]:
                if r[3] < len(buf):
                    n = self.sock.readinto(memoryview(buf)[r[3] :])
                else:  # past what is kept: read and forget
                    n = len(self.sock.read(min(r[1] - r[3], 256)) or b"") or None
                if n is None:
                    return
                if not n:
                    raise OSError("broker closed the connection")
                r[3] += n
                self._heard = ticks_ms()
                if r[3] < r[1]:
                    continue
            self._rx = None
            self._packet_in(r[0], r[1], buf)

    def _packet_in(self, first, size, body):
        kind = first & 0xF0
        if kind == 0x20:  # CONNACK
            if body[1]:
                self._backoff = _BACKOFF_MAX_MS // 2  # refused (login, ACL): not soon again
                raise OSError("broker refused the connection (code %d)" % body[1])
            self.up = True
            self.connects += 1
            self._backoff = _BACKOFF_MIN_MS
            m = self.ident.get("mqtt", {})
            self.log("mqtt connected to %s:%s" % (m.get("host"), m.get("port")))
            # Birth, retained; QoS 0 is enough: if the link fails first, the will says "offline".
            self._send(_packet(0x31, _str(self.prefix + "status") + b"online"))
            self._pid += 1
            self._send(_packet(0x82, self._pid.to_bytes(2, "big") + _str(self.prefix + "config")
                               + b"\x01" + _str(self.prefix + "cmd/+") + b"\x01"))  # fmt: skip
            self._next = self._now + m.get("keepalive", 60) * 500  # the first ping
        elif kind == 0x40:  # PUBACK
            if self.unacked and (body[0] << 8 | body[1]) == self.unacked:
                self.unacked = 0
                self.acked += 1
        elif kind == 0x30:  # PUBLISH from the broker (config, commands)
            n = body[0] << 8 | body[1]
            topic = bytes(body[2 : 2 + n])
            n += 2
            if first & 6:
                self._send(b"\x40\x02" + bytes(body[n : n + 2]))  # PUBACK
                n += 2
            if size > len(body):
                self.log("message of %d bytes on %s skipped" % (size, topic.decode()))
                self.on_message(topic, size - n)
            else:
                self.on_message(topic, bytes(body[n:]))
        # SUBACK, PINGRESP: nothing to do beyond having heard the broker

    def fail(self, e):
        up = self.up
        self.drop(_FAILED % ("mqtt" if up else "connect", e))
        # A cluster (docs/cluster.md): mqtt.fallback lists the other nodes, [[host, port], ...];
        # the next try goes to the next node, round the ring, TLS names included.
        m = self.ident.get("mqtt", {})
        f = m.get("fallback")
        if f:
            f.append([m.get("host"), m.get("port")])
            m["host"], m["port"] = f.pop(0)
        if not up:  # try again later, less often (a broken session is made again at once)
            self._next = self._now + self._backoff
            self._backoff = min(self._backoff * 2, _BACKOFF_MAX_MS)

    def drop(self, why):
        s = self.sock
        self.sock = self._poll = self._rx = None
        self.up = False
        self.unacked = 0  # resent after the next connect (it is still first in the queue)
        self._tx = b""
        self._next = 0
        if s is not None:
            try:
                s.close()  # no DISCONNECT: the broker sends our last will ("offline")
            except OSError:
                pass
        self.log(why)

    def publish(self, leaf, payload, retain=False, qos=0):
        """Queue a publish under this device's topic; it goes out in this and later service()
        calls. Returns False when there is no session, when a QoS 1 publish is already in flight,
        or when the socket is not taking data. A QoS 1 publish's PUBACK adds one to `acked`."""
        if not self.up or len(self._tx) > _TX_MAX or (qos and self.unacked):
            return False
        topic = _str(self.prefix + leaf)
        if qos:
            self._pid = self._pid % 65535 + 1
            self.unacked = self._pid
            topic += self._pid.to_bytes(2, "big")
        if isinstance(payload, str):
            payload = payload.encode()
        # Header, topic and payload written one after the other: a telemetry payload is ~500 B,
        # and on a fragmented 96 KB heap another copy of it joined to the topic may not fit.
        try:
            self._send(_header(0x30 | qos << 1 | retain, len(topic) + len(payload)))
            self._send(topic)
            self._send(payload)
        except OSError as e:
            self.fail(e)
            return False
        if qos:
            self._deadline = ticks_add(ticks_ms(), _ANSWER_MS)
        return True
