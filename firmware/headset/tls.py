# TLS for the headset's MQTT link (firmware/headset/net.py), loaded only when device.json asks for it:
# ssl.SSLContext with the broker's certificate checked against the CA written at provisioning
# (mqtt.ca, DER). Never `ussl` (MicroPython removed it in 1.23); a MicroPython without
# SSLContext (before 1.22) gets no unchecked link.


def wrap(sock, m, root):
    """The TCP socket wrapped for TLS with the broker's certificate checked against the CA from
    provisioning. Raises OSError (the connect fails and is retried) when that cannot be done."""
    import ssl

    if not hasattr(ssl, "SSLContext"):
        raise OSError("this MicroPython has no ssl.SSLContext, so it cannot check the broker's "
                      "certificate; flash MicroPython 1.23 or later")  # fmt: skip
    ca = m.get("ca")
    if not ca:
        raise OSError("mqtt.ssl without mqtt.ca in device.json; provision with --mqtt-ca")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED  # type: ignore[attr-defined]  # (1.22+; not in the stubs)
    with open(root + ca, "rb") as f:
        ctx.load_verify_locations(cadata=f.read())
    return ctx.wrap_socket(sock, server_hostname=m["host"], do_handshake_on_connect=False)
