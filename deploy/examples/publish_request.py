#!/usr/bin/env python3
r"""Publish one snapshot request (or one cancel) to recman over RabbitMQ (pika).

    publish_request.py --url amqp://user@host:5672/recman --password-file /etc/recman/amqp-password \
        --request-id nightly-db01 db01 [db02 ...]
    publish_request.py --url ... --cancel JOB_ID [--reason "window closed"]

The request is JSON per schemas/ (SnapshotRequest). It goes to the fanout
exchange `recman.requests`, persistent, with publisher confirms: when this
script exits 0 the broker has it, and the engine will turn it into a job
(sending the same request_id again returns the same job). A cancel
(CancelRequest) ends the job, thawing first what it froze. A request that does
not validate, or that the engine refuses (unknown job, job ended), is dead-lettered to `recman.dlq` with the reason in the header
`x-recman-reason`.
"""
import argparse
import json
import sys

import pika

import amqp_url


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    amqp_url.add_arguments(ap)
    ap.add_argument("--request-id", help="your idempotency key (a snapshot request)")
    ap.add_argument("--kind", default="full", choices=["full", "copy"])
    ap.add_argument("--cancel", metavar="JOB_ID", help="cancel this job instead")
    ap.add_argument("--reason", help="why (with --cancel; recorded in the log)")
    ap.add_argument("targets", nargs="*", help="target ids from the engine's config (several = one consistency group)")
    a = ap.parse_args()

    if a.cancel:
        if a.request_id or a.targets:
            ap.error("--cancel takes no --request-id and no targets")
        body = {"schema_version": 1, "cancel": a.cancel}
        if a.reason:
            body["reason"] = a.reason
        message_id = "cancel/" + a.cancel
    else:
        if not a.request_id or not a.targets:
            ap.error("a snapshot request needs --request-id and at least one target")
        body = {"schema_version": 1, "request_id": a.request_id, "targets": a.targets, "kind": a.kind}
        message_id = "req/" + a.request_id
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url.url(a)))
    ch = conn.channel()
    ch.confirm_delivery()  # basic_publish raises if the broker does not confirm
    props = pika.BasicProperties(
        content_type="application/json",
        delivery_mode=2,
        message_id=message_id,
        type="request",
        headers={"x-recman-schema-version": "1"},
    )
    ch.basic_publish(exchange="recman.requests", routing_key="", body=json.dumps(body).encode(), properties=props)
    conn.close()
    if a.cancel:
        print("published cancel of job", a.cancel)
    else:
        print("published request", a.request_id, "for", ", ".join(a.targets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
