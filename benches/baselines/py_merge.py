"""The plain Python merge baseline: load every result file into a dict keyed
by custom_id, then write one merged line per request in input order."""
import json
import sys

requests, out_path, *result_paths = sys.argv[1:]
results = {}
for path in result_paths:
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                results[r["custom_id"]] = r

with open(requests, "rb") as f, open(out_path, "w") as out:
    for n, line in enumerate(f, 1):
        custom_id = json.loads(line)["custom_id"]
        r = results.get(custom_id)
        status, code, body, error = "missing", None, None, {"code": "missing", "message": "no result"}
        if r is not None:
            response, err = r.get("response"), r.get("error")
            if err:
                status = {"batch_expired": "expired", "batch_cancelled": "cancelled"}.get(err.get("code"), "failed")
                error = err
            elif response:
                code, body = response.get("status_code"), response.get("body")
                if 200 <= (code or 0) < 300:
                    status, error = "succeeded", None
                else:
                    status, error = "failed", (body or {}).get("error")
        out.write(json.dumps({"custom_id": custom_id, "line": n, "status": status, "status_code": code,
                              "response": body, "error": error}) + "\n")
