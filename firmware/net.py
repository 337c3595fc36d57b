# Wi-Fi and MQTT for the headset, serviced a little at a time from the main loop so the audio loop
# keeps running whatever the network does. Both links reconnect with exponential backoff.
#
# MQTT is umqtt.simple from micropython-lib (fetched from PyPI by `make mpy-lib`, shipped in the
# bundle). umqtt.robust is not used: its reconnect loop sleeps and retries forever, which would
# stall the audio loop; the backoff lives here instead, around umqtt.simple.
from umqtt.simple import MQTTClient, MQTTException

from firmware.events import TOPIC_ROOT

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_BACKOFF_MIN_MS = const(1000)
_BACKOFF_MAX_MS = const(60000)
_SOCKET_TIMEOUT_S = const(5)
_FAILED = const("%s failed: %r")


class _Client(MQTTClient):
    """umqtt.simple with a socket timeout (set by Link once connected): a broker that vanishes
    without closing the connection raises OSError after a few seconds instead of blocking
    forever. wait_msg() leaves the socket blocking, so the timeout is put back after every read
    (after a failed one Link closes the socket anyway)."""

    def wait_msg(self):
        r = super().wait_msg()
        self.sock.settimeout(_SOCKET_TIMEOUT_S)
        return r


class Link:
    """Wi-Fi station + MQTT session for one device.

    ident: the provisioned identity dict (site, device, wifi{ssid,password}, mqtt{host,port,...}).
    on_message(topic, payload): umqtt's callback (bytes, bytes), for config and commands: topics
    under `prefix` ("calmcue/v1/<site>/<device>/").
    """

    def __init__(self, wlan, ident, on_message, log=print):
        self.wlan = wlan
        self.ident = ident
        self.on_message = on_message
        self.log = log
        self.prefix = "%s/%s/%s/" % (TOPIC_ROOT, ident["site"], ident["device"])
        self.client = None
        self.up = False  # an MQTT session is open
        self.connects = 0  # successful MQTT sessions since boot
        self._wifi_next = 0
        self._wifi_backoff = _BACKOFF_MIN_MS
        self._next = 0  # without a session: the next MQTT try; with one: the next ping
        self._backoff = _BACKOFF_MIN_MS  # MQTT's
        wlan.active(True)

    def service(self, now_ms):
        """Bring the links up when due; handle incoming messages. Returns True when MQTT is up."""
        if not self.wlan.isconnected():
            if self.up:
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
        if not self.up and now_ms < self._next:
            return False
        c = self.client
        new = c is None
        try:
            if c is None:
                m = self.ident.get("mqtt", {})
                c = _Client(
                    self.ident["device"], m.get("host", "127.0.0.1"), m.get("port", 1883),
                    m.get("user"), m.get("password"), keepalive=m.get("keepalive", 60),
                    ssl=m.get("ssl", False),  # mqtts: device.json from provisioning says so
                )  # fmt: skip
                # The broker publishes "offline" for us if we vanish; "online" is our birth
                # message. (str payloads: umqtt writes them as bytes, and short ones are qstrs.)
                c.set_last_will(self.prefix + "status", "offline", retain=True, qos=1)
                c.set_callback(self.on_message)
                c.connect()
                c.sock.settimeout(_SOCKET_TIMEOUT_S)
                self.client = c
                self.up = True
                c.publish(self.prefix + "status", "online", True, 1)
                c.subscribe(self.prefix + "config", 1)
                c.subscribe(self.prefix + "cmd/+", 1)
                self._backoff = _BACKOFF_MIN_MS
                self.connects += 1
                self.log("mqtt connected to %s:%s" % (c.server, c.port))
            else:
                for _ in range(4):  # a few pending messages per call, never an unbounded loop
                    if c.check_msg() is None:
                        break
                if now_ms < self._next:
                    return True
                c.ping()
            self._next = now_ms + c.keepalive * 500
        except (OSError, MQTTException, IndexError, AssertionError, MemoryError) as e:
            # MemoryError: a message bigger than the heap has room for (umqtt reads a whole
            # message at once); the stream is then mid-message, so the session goes, as for a
            # broken link, and the device carries on instead of crashing.
            self.drop(_FAILED % ("connect" if new else "mqtt", e), c)
            if new:  # try again later, less often
                self._next = now_ms + self._backoff
                self._backoff = min(self._backoff * 2, _BACKOFF_MAX_MS)
        return self.up

    def drop(self, why, client=None):
        c = client or self.client
        self.client = None
        self.up = False
        self._next = 0  # reconnect at once (a failed connect sets its backoff after this)
        if c is not None and c.sock is not None:
            try:
                c.sock.close()  # no DISCONNECT: the broker sends our last will ("offline")
            except OSError:
                pass
        self.log(why)

    def publish(self, leaf, payload, retain=False, qos=0):
        """Publish under this device's topic. Returns False (and drops the session) on failure;
        with qos=1 True means the broker acknowledged it."""
        if self.client is None:
            return False
        try:
            self.client.publish(self.prefix + leaf, payload, retain, qos)
            return True
        except (OSError, MQTTException, IndexError, AssertionError) as e:
            self.drop(_FAILED % ("publish", e))
            return False
