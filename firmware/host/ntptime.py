# Fake `ntptime` for the host runner: the host clock stands in for the NTP server, reachable
# only while the fake radio is up.
import time as _time

import network


def time():
    if not network._radio[0]:
        raise OSError("no route to NTP server")
    return _time.time()
