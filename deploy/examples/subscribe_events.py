#!/usr/bin/env python3
"""Print recman's events as they happen (pika), one JSON line each.

    subscribe_events.py --url amqp://user:pw@host:5672/recman [--binding 'completed.#'] [--until-request ID]

Events come from the topic exchange `recman.events`, routing key
`<event kind>.<first target of the job>` (e.g. `completed.db01`). Each body is
an EventMessage (schemas/): `seq` is the global log position; after an engine
crash an event may come twice with the same `seq` and message id, so this
keeps the highest seq seen and drops what is not newer.

Without --queue it uses an exclusive queue that lives as long as this
process; with --queue NAME a durable one that keeps events while it is away.
With --until-request ID it exits 0 once that request's job completed (1 if it
failed or was cancelled).
"""
import argparse
import json
import sys

import pika


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--binding", default="#")
    ap.add_argument("--queue", default="", help="durable queue name (default: exclusive, server-named)")
    ap.add_argument("--until-request", default=None)
    a = ap.parse_args()

    conn = pika.BlockingConnection(pika.URLParameters(a.url))
    ch = conn.channel()
    if a.queue:
        q = ch.queue_declare(queue=a.queue, durable=True, arguments={"x-queue-type": "quorum"}).method.queue
    else:
        q = ch.queue_declare(queue="", exclusive=True, auto_delete=True).method.queue
    ch.queue_bind(queue=q, exchange="recman.events", routing_key=a.binding)
    ch.basic_qos(prefetch_count=100)
    print("subscribed", q, flush=True)

    last_seq = 0
    watched_job = None
    for method, props, body in ch.consume(q):
        msg = json.loads(body)
        seq = msg["seq"]
        if seq <= last_seq:
            ch.basic_ack(method.delivery_tag)  # a duplicate after a crash
            continue
        last_seq = seq
        ev = msg["event"]
        print(json.dumps({"seq": seq, "routing_key": method.routing_key, "job": ev["job"], "type": ev["body"]["type"]}), flush=True)
        ch.basic_ack(method.delivery_tag)
        if a.until_request:
            if ev["body"]["type"] == "requested" and ev["body"].get("request_id") == a.until_request:
                watched_job = ev["job"]
            if ev["job"] == watched_job and ev["body"]["type"] in ("completed", "failed", "cancelled"):
                conn.close()
                return 0 if ev["body"]["type"] == "completed" else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
