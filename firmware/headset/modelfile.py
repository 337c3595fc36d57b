# The compact stress model file (model.ccm) on the device: found, hashed and loaded. Its own
# module so the boot code loads the model before anything else (firmware/headset/main.py,
# firmware/host/hostrun.py): the weights are the biggest long-lived blocks, and a heap still in
# one piece has room for them and for the file being read; loaded last, the same heap can be
# too fragmented for them even with plenty free.


def load_model(root):
    """The compact stress model (model.ccm) from flash or the bundle folder, with its SHA-256;
    (None, None) when there is none (placeholder score)."""
    import os
    import sys

    # Imports and loops here, no comprehension: the module stays loaded, and a comprehension
    # is one more function kept in the heap.
    bases = [root]
    for p in sys.path:
        if p:
            bases.append(p + "/")
    for base in bases:
        try:
            with open(base + "model.ccm", "rb") as f:
                # One buffer of the file's size: read() would grow (and copy) its buffer
                # step by step, a peak of twice the model in a small heap.
                data = bytearray(os.stat(base + "model.ccm")[6])
                f.readinto(data)
        except OSError:
            continue
        import binascii
        import hashlib

        from firmware.core import nnrt

        digest = binascii.hexlify(hashlib.sha256(data).digest()).decode()
        return nnrt.Model(data), digest
    return None, None
