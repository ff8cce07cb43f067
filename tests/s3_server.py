#!/usr/bin/env python3
"""The S3-compatible server of the tests: moto's S3 (pip package `moto[server]`, the server that
`moto_server` runs) on 127.0.0.1:PORT, with BUCKET created, serving one write at a time.

Usage: python3 tests/s3_server.py PORT BUCKET

Why not `moto_server` itself: moto checks a conditional write's precondition (If-None-Match: *,
If-Match: <etag>) and then writes, in two steps without a lock, while `moto_server` serves requests
on several threads. Two racing conditional writes can then both succeed, which S3 never allows,
and the backend's race tests (exactly one `set_if_absent` winner, no lost `incr`) would test moto's
race instead of the backend. Writes one at a time (reads alongside them) make each write atomic,
as on S3.
Everything is kept in memory: a restarted server is empty (with BUCKET created again).
"""
import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple
from werkzeug.test import Client


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    port, bucket = int(sys.argv[1]), sys.argv[2]
    moto = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def one_at_a_time(environ, start_response):
        if environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            return moto(environ, start_response)
        with lock:
            # Consumed under the lock: the write is done before the next write starts.
            return list(moto(environ, start_response))

    # Path-style requests to a loopback host are S3's; create the bucket before serving.
    created = Client(one_at_a_time).put(f"/{bucket}", headers={"Host": f"127.0.0.1:{port}"})
    if created.status_code != 200:
        sys.exit(f"could not create bucket {bucket}: {created.status_code} {created.get_data(as_text=True)}")
    run_simple("127.0.0.1", port, one_at_a_time, threaded=True)


if __name__ == "__main__":
    main()
