# LiPo voltage through a resistor divider on an ADC pin (hardware/esp32s3-headset.md: 2 x 100 k,
# so the pin sees half the cell voltage). Read rarely: for telemetry only.

# (volts, percent) points of a typical 1-cell LiPo discharge curve at low load.
_CURVE = ((3.30, 0), (3.60, 8), (3.70, 25), (3.75, 40), (3.80, 55), (3.90, 70), (4.00, 82),
          (4.10, 93), (4.20, 100))


class Battery:
    def __init__(self, adc, divider=2.0):
        self.adc = adc
        self.divider = divider

    def volts(self):
        # read_uv() uses the chip's calibration, better than scaling read_u16() by hand.
        return self.adc.read_uv() * self.divider / 1000000

    def percent(self, v=None):
        if v is None:
            v = self.volts()
        lo_v, lo_p = _CURVE[0]
        if v <= lo_v:
            return 0
        for hi_v, hi_p in _CURVE[1:]:
            if v <= hi_v:
                return int(lo_p + (hi_p - lo_p) * (v - lo_v) / (hi_v - lo_v))
            lo_v, lo_p = hi_v, hi_p
        return 100
