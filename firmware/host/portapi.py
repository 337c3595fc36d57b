# The ESP32 port's argument checks for the two calls the firmware makes once at boot
# (machine.freq, WLAN.config), so the fakes take only what the real port takes. Loaded by
# firmware/host/machine.py for the call and dropped after it: checks that run once at boot
# should not sit in the heap the firmware runs in (the device has no such code at all).
# Messages and exception types as ports/esp32 gives them in 1.23-1.29 (modmachine.c,
# network_wlan.c, network_common.c's esp_exceptions).
from machine import state


def freq(hz):
    if hz is None:
        return state["freq"][0] if "freq" in state else 160000000  # the stock image's clock
    if hz // 1000000 not in (20, 40, 80, 160, 240):
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
    s = state.get("freq")
    state["freq"] = [hz, s[1] + 1 if s else 1]


def config(w, a, kw):
    # pm only (the one the firmware sets): a query by name, or pm= one of the PM_ values.
    # Stricter than the port in one way: the interface must be active (ESP-IDF's examples set
    # power save after esp_wifi_start, which active(True) is).
    if a and kw:
        raise TypeError("either pos or kw args are allowed")
    if a:
        if a != ("pm",):
            raise ValueError("unknown config param")
        return state["pm"][0] if "pm" in state else 1  # ESP-IDF's default: WIFI_PS_MIN_MODEM
    for k in kw:
        if k != "pm":
            raise ValueError("unknown config param")
    if not w.count:
        raise OSError("Wifi Not Started")
    v = kw["pm"]
    if v not in (0, 1, 2):
        raise RuntimeError("Wifi Unknown Error 0x0102")  # ESP_ERR_INVALID_ARG
    s = state.get("pm")
    state["pm"] = [v, s[1] + 1 if s else 1]
