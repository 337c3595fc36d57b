# Runs first on every reset. Kept tiny: anything that fails here could lock us out of the REPL.
import gc

try:
    import esp

    esp.osdebug(None)  # no vendor log lines on the UART the REPL uses
except ImportError:
    pass
gc.collect()
