# Wi-Fi and MQTT for the headset, serviced a little at a time from the main loop so the audio loop
# keeps running whatever the network does. Both links reconnect with exponential backoff.
#
# MQTT is umqtt.simple from micropython-lib (fetched from PyPI by `make mpy-lib`, shipped in the
# bundle). umqtt.robust is not used: its reconnect loop sleeps and retries forever, which would
# stall the audio loop; the backoff lives here instead, around umqtt.simple.
from umqtt.simple import MQTTClient, MQTTException

from firmware import events

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_BACKOFF_MIN_MS = const(1000)
_BACKOFF_MAX_MS = const(60000)
_SOCKET_TIMEOUT_S = const(5)


class _Client(MQTTClient):
    """umqtt.simple with a socket timeout: a broker that vanishes without closing the connection
    raises OSError after a few seconds instead of blocking forever. check_msg() leaves the socket
    blocking, so the timeout is put back after every read."""

    def connect(self, clean_session=True, timeout=None):
        r = super().connect(clean_session)
        self.sock.settimeout(_SOCKET_TIMEOUT_S)
        return r

    def wait_msg(self):
        try:
            return super().wait_msg()
        finally:
            if self.sock is not None:
                self.sock.settimeout(_SOCKET_TIMEOUT_S)


class Link:
    """Wi-Fi station + MQTT session for one device.

    ident: the provisioned identity dict (site, device, wifi{ssid,password}, mqtt{host,port,...}).
    on_message(topic_leaf, payload): called for config and commands.
    """

    def __init__(self, wlan, ident, on_message, log=print):
        self.wlan = wlan
        self.ident = ident
        self.on_message = on_message
        self.log = log
        self.site = ident["site"]
        self.device = ident["device"]
        self.prefix = events.topic(self.site, self.device, "")
        self.client = None
        self.connects = 0  # successful MQTT sessions since boot
        self._wifi_next = 0
        self._wifi_backoff = _BACKOFF_MIN_MS
        self._mqtt_next = 0
        self._mqtt_backoff = _BACKOFF_MIN_MS
        self._ping_next = 0
        m = ident.get("mqtt", {})
        self._keepalive = m.get("keepalive", 60)
        wlan.active(True)

    def topic(self, leaf):
        return self.prefix + leaf

    @property
    def up(self):
        return self.client is not None

    def rssi(self):
        try:
            return self.wlan.status("rssi")
        except (OSError, ValueError):
            return None

    def service(self, now_ms):
        """Bring the links up when due; handle incoming messages. Returns True when MQTT is up."""
        if not self.wlan.isconnected():
            if self.client is not None:
                self.drop("wifi lost")
            if now_ms >= self._wifi_next:
                w = self.ident.get("wifi", {})
                try:
                    self.wlan.connect(w.get("ssid", ""), w.get("password", ""))
                except OSError as e:
                    self.log("wifi connect failed: %r" % e)
                self._wifi_next = now_ms + self._wifi_backoff
                self._wifi_backoff = min(self._wifi_backoff * 2, _BACKOFF_MAX_MS)
            return False
        self._wifi_backoff = _BACKOFF_MIN_MS
        if self.client is None:
            if now_ms < self._mqtt_next:
                return False
            self._connect(now_ms)
            return self.client is not None
        try:
            for _ in range(4):  # a few pending messages per call, never an unbounded loop
                if self.client.check_msg() is None:
                    break
            if now_ms >= self._ping_next:
                self.client.ping()
                self._ping_next = now_ms + self._keepalive * 500
        except (OSError, MQTTException, IndexError, AssertionError) as e:
            self.drop("mqtt lost: %r" % e)
        return self.client is not None

    def _connect(self, now_ms):
        m = self.ident.get("mqtt", {})
        c = _Client(
            self.device, m.get("host", "127.0.0.1"), m.get("port", 1883),
            m.get("user"), m.get("password"), keepalive=self._keepalive,
            ssl=m.get("ssl", False),  # mqtts: device.json from provisioning says so
        )
        # The broker publishes "offline" for us if we vanish; "online" is our birth message.
        c.set_last_will(self.topic("status"), b"offline", retain=True, qos=1)
        c.set_callback(self._on_raw)
        try:
            c.connect()
            self.client = c
            c.publish(self.topic("status"), b"online", True, 1)
            c.subscribe(self.topic("config"), 1)
            c.subscribe(self.topic("cmd/+"), 1)
        except (OSError, MQTTException, IndexError, AssertionError) as e:
            self.drop("mqtt connect failed: %r" % e, c)
            self._mqtt_next = now_ms + self._mqtt_backoff
            self._mqtt_backoff = min(self._mqtt_backoff * 2, _BACKOFF_MAX_MS)
            return
        self._mqtt_backoff = _BACKOFF_MIN_MS
        self._ping_next = now_ms + self._keepalive * 500
        self.connects += 1
        self.log("mqtt connected to %s:%s" % (c.server, c.port))

    def _on_raw(self, topic, msg):
        t = topic.decode()
        if t.startswith(self.prefix):
            self.on_message(t[len(self.prefix):], msg)

    def drop(self, why, client=None):
        c = client or self.client
        self.client = None
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
            self.client.publish(self.topic(leaf), payload, retain, qos)
            return True
        except (OSError, MQTTException, IndexError, AssertionError) as e:
            self.drop("publish failed: %r" % e)
            return False
