"""A Neutron stand-in for the lab: Nova calls Neutron even for servers
booted with "networks": "none" (server show, evacuate, delete list ports).

Every collection GET answers an empty list, quotas are unlimited, a single
resource GET is a 404, DELETE is a 204. Usage: neutron_stub.py HOST PORT
"""
import http.server
import json
import re
import socketserver
import sys

UUID = re.compile(r"^[0-9a-fA-F-]{32,36}$")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

    def _send(self, code, body=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _drain(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)

    def do_GET(self):
        path = self.path.split("?", 1)[0].rstrip("/")
        parts = [p for p in path.split("/") if p]
        if parts and parts[-1].endswith(".json"):
            parts[-1] = parts[-1][:-5]
        if not parts or parts == ["v2.0"]:
            return self._send(200, {"resources": []})
        if "quotas" in parts:
            return self._send(200, {"quota": {k: -1 for k in (
                "network", "subnet", "port", "router", "floatingip",
                "security_group", "security_group_rule")}})
        last = parts[-1]
        if UUID.match(last):
            return self._send(404, {"NeutronError": {
                "type": "NotFound", "message": "lab stub has no %s" % last, "detail": ""}})
        return self._send(200, {last.replace("-", "_"): []})

    def do_DELETE(self):
        self._drain()
        self._send(204)

    def do_POST(self):
        self._drain()
        self._send(400, {"NeutronError": {
            "type": "BadRequest", "message": "lab stub creates nothing", "detail": ""}})

    do_PUT = do_POST


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    Server((host, port), Handler).serve_forever()


if __name__ == "__main__":
    main()
