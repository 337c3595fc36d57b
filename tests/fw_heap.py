"""MicroPython text shared by the tests that load firmware code into a cut-up heap."""

# cut_heap(hold, hole): fill the free heap with one-block objects kept in `hold` (a list made
# while the heap was still in one piece), then free all but one block in every hole + 1, so no
# free run is longer than `hole` blocks (32 B each on the 64-bit unix port). Returns how many
# were made (fewer than len(hold): the heap was full first). Insert it into a script's text.
CUT_HEAP = r"""
def cut_heap(hold, hole):
    k = 0
    try:
        while k < len(hold):
            hold[k] = (k, k)  # one block each, until the heap is full
            k += 1
    except MemoryError:
        pass
    i = 0
    while i < k:  # keep one block in every hole + 1: no free run is longer than hole
        if (id(hold[i]) >> 5) % (hole + 1):
            hold[i] = None
        i += 1
    gc.collect()
    return k
"""
