"""pyapp web process: a stdlib HTTP server on $PORT (default 8000).

GET /        -> hello from <PAAS_REPLICA> release <PAAS_RELEASE> GREETING=<GREETING>
GET /healthz -> 200 ok
SIGTERM (and SIGINT) stop the server gracefully: in-flight requests finish, exit 0.
"""
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    server_version = "pyapp/1"

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self.reply(200, "ok\n")
        elif path == "/":
            self.reply(200, "hello from {} release {} GREETING={}\n".format(
                os.environ.get("PAAS_REPLICA", "?"), os.environ.get("PAAS_RELEASE", "?"),
                os.environ.get("GREETING", "")))
        else:
            self.reply(404, "not found\n")

    def reply(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        if not self.path.startswith("/healthz"):       # health checks every second would flood the log
            sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))


def main():
    port = int(os.environ.get("PORT", "8000"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.daemon_threads = False          # server_close() waits for in-flight requests
    stop = threading.Event()

    def on_signal(signum, _frame):
        if not stop.is_set():
            stop.set()
            print(f"got signal {signum}, shutting down", flush=True)
            threading.Thread(target=server.shutdown).start()   # shutdown() blocks: not in serve_forever's thread

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"pyapp listening on :{port} as {os.environ.get('PAAS_REPLICA', '?')}", flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    print("bye", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
