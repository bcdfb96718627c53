# httpserver.py: python3's http.server for the TCP tests, with keep-alive
# (HTTP/1.1) and one thread per connection. It prints "listening PORT" and
# answers GET /n?i=K with "reply K to HOST:PORT".
import http.server
import sys
import urllib.parse


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        body = ("reply %s to %s:%d\n" % (q["i"][0], self.client_address[0], self.client_address[1])).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


srv = http.server.ThreadingHTTPServer((sys.argv[1], 0), Handler)
print("listening %d" % srv.server_address[1], flush=True)
srv.serve_forever()
