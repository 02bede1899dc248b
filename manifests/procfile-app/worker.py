"""procfile-app worker process: prints a line every 2 s; exits 0 on SIGTERM/SIGINT."""
import os
import signal
import sys
import threading

stop = threading.Event()


def on_signal(signum, _frame):
    print(f"worker got signal {signum}, exiting", flush=True)
    stop.set()


def main():
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    replica = os.environ.get("PAAS_REPLICA", "?")
    n = 0
    while not stop.is_set():
        n += 1
        print(f"worker {replica} tick {n}", flush=True)
        stop.wait(2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
