"""Serve Placement's WSGI application from a threaded server.

/usr/bin/placement-api is a single-threaded development server: one slow
request from a compute stalls every other. Usage:
    OS_PLACEMENT_CONFIG_DIR=DIR python3 placement_server.py HOST PORT
"""
import socketserver
import sys
from wsgiref import simple_server


class ThreadingWSGIServer(socketserver.ThreadingMixIn, simple_server.WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class QuietHandler(simple_server.WSGIRequestHandler):
    def log_message(self, fmt, *args):  # placement logs requests itself
        pass


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    from placement import wsgi

    app = wsgi.init_application()
    srv = simple_server.make_server(host, port, app, ThreadingWSGIServer, QuietHandler)
    print("placement listening on %s:%d" % (host, port), flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
