"""A webhook receiver that checks every delivery with the official openai
SDK (`client.webhooks.unwrap`, which verifies the Standard Webhooks
signature and parses the event) and appends what it got to a JSON-lines
file.

Usage: webhook_receiver.py SECRET OUT_FILE [REFUSE_FIRST_N [PORT]]

Prints its port on the first line of standard output. The first
REFUSE_FIRST_N deliveries are answered 503, to see them delivered again.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from openai import OpenAI

secret, out = sys.argv[1], sys.argv[2]
refuse = int(sys.argv[3]) if len(sys.argv) > 3 else 0
port = int(sys.argv[4]) if len(sys.argv) > 4 else 0
client = OpenAI(api_key="unused")
count = 0


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        global count
        body = self.rfile.read(int(self.headers["content-length"]))
        count += 1
        headers = {k.lower(): v for k, v in self.headers.items()}
        record = {"n": count, "webhook_id": headers.get("webhook-id"), "path": self.path}
        try:
            event = client.webhooks.unwrap(body, headers, secret=secret)
            record.update(
                verified=True,
                type=event.type,
                id=event.id,
                batch=event.data.id,
                created_at=event.created_at,
                object=event.object,
            )
        except Exception as e:  # what the SDK refused, for the test to show
            record.update(verified=False, error=f"{type(e).__name__}: {e}")
        status = 503 if count <= refuse else (200 if record["verified"] else 400)
        record["answered"] = status
        with open(out, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", port), Receiver)
print(server.server_address[1], flush=True)
server.serve_forever()
