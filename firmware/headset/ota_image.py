# The ROMFS image of an over-the-air update (firmware/headset/ota.py loads this module only for an update
# that carries one). The board's romfs partition holds two images, slot a's in its first half and
# slot b's in its second (firmware/headset/ota_boot.py, which mounts them); an update writes the inactive
# slot's half only: erased block by block, the image streamed in and hashed as it comes, read
# back from flash and hashed again, and only then named in <slot>/romfs.json, which is what
# makes the loader mount it. Problems raise ValueError; ota.apply reports them as "refused".
import binascii
import hashlib
import json
import os

RECORD = "romfs.json"


def segment():
    """The romfs partition (as ota_boot.rom_segment: boot.py is not importable, importing it
    would run the loader), or None."""
    import vfs

    ioctl = getattr(vfs, "rom_ioctl", None)
    if ioctl is None:
        try:  # the unix port has no flash: the host's fake partition (firmware/host/romflash.py)
            from romflash import rom_ioctl as ioctl
        except ImportError:
            return None
    if ioctl(1) < 1:
        return None
    seg = ioctl(2, 0)
    return None if isinstance(seg, int) else seg


def room(slot, size):
    """(partition, where `slot`'s image starts), or ValueError when this device cannot hold an
    image of `size` bytes."""
    seg = segment()
    if seg is None:
        raise ValueError("the update carries its code as a ROMFS image, but this device has no "
                         "romfs partition (MicroPython >= 1.25 with one in its partition table); "
                         "publish the bundle without --image for it")
    half = seg.ioctl(4, 0) // 2 * seg.ioctl(5, 0)
    if size > half:
        raise ValueError("the image is %d bytes; half of this device's romfs partition holds %d"
                         % (size, half))
    return seg, 0 if slot == "a" else half


def _hex(h):
    return binascii.hexlify(h.digest()).decode()


def write(request, url, seg, start, slot, want, alive=None):
    """Fetch the image at `url` (request: ota._request) into the partition from `start`, check it
    against `want` ({"size", "sha256"} from the signed manifest), then write the slot's record."""
    size = want["size"]
    bs = seg.ioctl(5, 0)
    for block in range(start // bs, (start + size + bs - 1) // bs):
        seg.ioctl(6, block)
        if alive is not None:
            alive()
    h = hashlib.sha256()
    end = [start]

    def sink(chunk):
        at = end[0]
        if at + len(chunk) > start + size:
            raise ValueError("romfs.img: longer than the signed manifest says")
        h.update(chunk)
        seg.writeblocks(at // bs, chunk, at % bs)
        end[0] = at + len(chunk)

    status, _ = request("GET", url, sink=sink)
    got = _hex(h)
    if status != 200 or got != want["sha256"] or end[0] != start + size:
        raise ValueError("romfs.img: hash %s does not match the signed manifest (%s)"
                         % (got, want["sha256"]))
    got = _hex(hashlib.sha256(memoryview(seg)[start:start + size]))
    if got != want["sha256"]:
        raise ValueError("romfs.img: read back from flash, hash %s, not the signed manifest's" % got)
    tmp = slot + "/" + RECORD + ".part"
    with open(tmp, "w") as f:
        json.dump({"size": size, "sha256": got}, f)
    os.rename(tmp, slot + "/" + RECORD)
