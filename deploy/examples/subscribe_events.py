#!/usr/bin/env python3
r"""Print recman's events as they happen (pika), one JSON line each.

    subscribe_events.py --url amqp://user@host:5672/recman --password-file FILE \
        [--binding 'completed.#'] [--until-request ID [--api http://ENGINE:7080]]

Events come from the topic exchange `recman.events` in two forms:
- one event per message (low rates): routing key `<event kind>.<first target
  of the job>` (e.g. `completed.db01`), a group's other members as `CC` keys
  (a binding on any member matches), type `event`, body an EventMessage
  (schemas/);
- a batch (when many events are waiting): routing key `batch`, type
  `event-batch`, body a JSON array of EventMessages in log order, message id
  `events/<first seq>-<last seq>`.
A binding other than `#` should also bind `batch` and filter inside batches
(this script does both with --binding). `seq` is the global log position;
after an engine crash an event may come twice, so this keeps the highest seq
seen and drops what is not newer.

Without --queue it uses an exclusive queue that lives as long as this
process; with --queue NAME a durable one that keeps events while it is away.
Name it `recman.sub.<you>` and give the user the "durable event subscriber"
row of the permission table in deploy/README.md (a user with the plain
subscriber row may only use server-named `amq.gen-…` queues).
With --until-request ID it exits 0 once that request's job completed (1 if it
failed or was cancelled), whatever --binding says (it also binds
`requested.#` to learn the request's job, and prints only what the binding
matches). Without --api it must be subscribed before the request is
accepted: a request accepted earlier, or sent again with the same id (the
engine answers with the existing job and records nothing new), leaves no new
event to see. With --api URL (the engine's HTTP API, `recman engine --listen`
or `recman up`; --api-token-file when it needs a token) it subscribes, then
asks the API for the request's job (GET /v1/jobs?request_id=ID): a job that
already ended ends the wait at once, one still running is followed on the bus.
"""
import argparse
import json
import re
import sys
import urllib.parse
import urllib.request

import pika

import amqp_url


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    amqp_url.add_arguments(ap)
    ap.add_argument("--binding", default="#")
    ap.add_argument("--queue", default="", help="durable queue name (default: exclusive, server-named)")
    ap.add_argument("--until-request", default=None)
    ap.add_argument(
        "--api",
        default=None,
        help="with --until-request: the engine's HTTP API (recman engine --listen, recman up), "
        "asked once subscribed, so that a request accepted earlier or sent again is found too",
    )
    ap.add_argument("--api-token-file", default=None, help="the API token (first line), when the API needs one")
    a = ap.parse_args()

    conn = pika.BlockingConnection(pika.URLParameters(amqp_url.url(a)))
    ch = conn.channel()
    try:
        if a.queue:
            q = ch.queue_declare(queue=a.queue, durable=True, arguments={"x-queue-type": "quorum"}).method.queue
        else:
            q = ch.queue_declare(queue="", exclusive=True, auto_delete=True).method.queue
        ch.queue_bind(queue=q, exchange="recman.events", routing_key=a.binding)
        if a.binding != "#":
            ch.queue_bind(queue=q, exchange="recman.events", routing_key="batch")
            if a.until_request:
                # The request's job is learnt from its `requested` event.
                ch.queue_bind(queue=q, exchange="recman.events", routing_key="requested.#")
    except pika.exceptions.ChannelClosedByBroker as e:
        if e.reply_code == 403:
            hint = (
                "a durable queue needs the \"durable event subscriber\" row of the permission table "
                "(deploy/README.md), for a queue named recman.sub.<you>"
                if a.queue
                else "the user needs the \"event subscriber\" row of the permission table (deploy/README.md)"
            )
            print("error: the broker refused: %s; %s" % (e.reply_text, hint), file=sys.stderr)
            return 2
        raise
    # For the filter inside batches: the binding as a regex on `<kind>.<target>`.
    pattern = re.compile(
        "^" + re.escape(a.binding).replace(r"\#", ".*").replace(r"\*", "[^.]*") + "$"
    )
    ch.basic_qos(prefetch_count=100)
    print("subscribed", q, flush=True)

    last_seq = 0
    watched_job = None
    if a.until_request and a.api:
        # Subscribed first, then asked: whatever happens to the job after the
        # answer comes as an event, so nothing falls between the two.
        job = ask_api(a.api, a.api_token_file, a.until_request)
        if job is not None:
            watched_job = job["id"]
            print(json.dumps({"api": True, "job": job["id"], "state": job["state"]}), flush=True)
            if job["state"] in ("completed", "failed", "cancelled"):
                conn.close()
                return 0 if job["state"] == "completed" else 1
    targets = {}  # job -> its targets, to filter inside batches
    for method, props, body in ch.consume(q):
        batch = props.type == "event-batch"
        for msg in json.loads(body) if batch else [json.loads(body)]:
            seq = msg["seq"]
            if seq <= last_seq:
                continue  # a duplicate after a crash
            last_seq = seq
            ev = msg["event"]
            kind = ev["body"]["type"]
            if kind == "requested":
                targets[ev["job"]] = ev["body"].get("targets") or ["unknown"]
            members = targets.get(ev["job"], ["unknown"])
            key = "%s.%s" % (kind, members[0]) if batch else method.routing_key
            if kind in ("completed", "failed", "cancelled"):
                targets.pop(ev["job"], None)
            if a.until_request and kind == "requested" and ev["body"].get("request_id") == a.until_request:
                watched_job = ev["job"]
            # A group matches when any member does (as the CC keys do). A
            # single message came through the binding, except a `requested`
            # that may have come through `requested.#` (--until-request):
            # that one is filtered like a batch.
            if batch or (kind == "requested" and a.until_request and a.binding != "#"):
                shown = any(pattern.match("%s.%s" % (kind, t)) for t in members)
            else:
                shown = True
            if shown:
                print(json.dumps({"seq": seq, "routing_key": key, "batch": batch, "job": ev["job"], "type": kind}), flush=True)
            if a.until_request:
                if ev["job"] == watched_job and kind in ("completed", "failed", "cancelled"):
                    ch.basic_ack(method.delivery_tag)
                    conn.close()
                    return 0 if kind == "completed" else 1
        ch.basic_ack(method.delivery_tag)
    return 0


def ask_api(api, token_file, request_id):
    """The job of `request_id` from the engine's API (GET /v1/jobs?request_id=), or None."""
    req = urllib.request.Request(
        "%s/v1/jobs?%s" % (api.rstrip("/"), urllib.parse.urlencode({"request_id": request_id}))
    )
    if token_file:
        with open(token_file) as f:
            req.add_header("Authorization", "Bearer " + f.readline().strip())
    with urllib.request.urlopen(req, timeout=30) as r:
        jobs = json.load(r)["jobs"]
    return jobs[0] if jobs else None


if __name__ == "__main__":
    sys.exit(main())
