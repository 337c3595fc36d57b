# Fake `network` for the host runner: the radio is fake (switch it with radio(False/True)); the
# sockets behind it are the unix port's real ones, so MQTT really reaches a local Mosquitto.
STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010

_radio = [True]
connect_calls = [0]


def radio(up):
    """Simulate Wi-Fi coverage: down = the access point vanished."""
    _radio[0] = up
    if not up:
        for w in _instances:
            w._joined = False


_instances = []


class WLAN:
    def __init__(self, interface=STA_IF):
        self._active = False
        self._joined = False
        _instances.append(self)

    def active(self, a=None):
        if a is None:
            return self._active
        self._active = a

    def connect(self, ssid=None, key=None):
        connect_calls[0] += 1
        if not self._active:
            raise OSError("Wifi Not Started")
        self._joined = _radio[0]

    def disconnect(self):
        self._joined = False

    def isconnected(self):
        return self._joined and _radio[0]

    def status(self, param=None):
        if param == "rssi":
            if not self.isconnected():
                raise OSError("not connected")
            return -58
        return STAT_GOT_IP if self.isconnected() else STAT_IDLE

    def ifconfig(self):
        return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
