#!/usr/bin/env python3
"""A mock Entra ID v2 token endpoint for the benchmark: answers every POST with a fresh
token valid for an hour and counts the calls (GET /count returns the number)."""
import http.server
import json
import sys
import threading

calls = 0
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are two writes: without this, Nagle + delayed ACK add 40 ms.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def do_POST(self):
        global calls
        length = int(self.headers.get("content-length", "0"))
        self.rfile.read(length)
        with lock:
            calls += 1
            n = calls
        body = json.dumps({"token_type": "Bearer", "expires_in": 3599, "access_token": f"bench-token-{n}"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        body = str(calls).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    server.serve_forever()
