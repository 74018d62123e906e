#!/usr/bin/env python3
r"""Publish one snapshot request to recman over RabbitMQ (pika).

    publish_request.py --url amqp://user@host:5672/recman --password-file /etc/recman/amqp-password \
        --request-id nightly-db01 db01 [db02 ...]

The request is JSON per schemas/ (SnapshotRequest). It goes to the fanout
exchange `recman.requests`, persistent, with publisher confirms: when this
script exits 0 the broker has it, and the engine will turn it into a job
(sending the same request_id again returns the same job). A request that does
not validate is dead-lettered to `recman.dlq` with the reason in the header
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
    ap.add_argument("--request-id", required=True, help="your idempotency key")
    ap.add_argument("--kind", default="full", choices=["full", "copy"])
    ap.add_argument("targets", nargs="+", help="target ids from the engine's config (several = one consistency group)")
    a = ap.parse_args()

    body = {"schema_version": 1, "request_id": a.request_id, "targets": a.targets, "kind": a.kind}
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url.url(a)))
    ch = conn.channel()
    ch.confirm_delivery()  # basic_publish raises if the broker does not confirm
    props = pika.BasicProperties(
        content_type="application/json",
        delivery_mode=2,
        message_id="req/" + a.request_id,
        type="request",
        headers={"x-recman-schema-version": "1"},
    )
    ch.basic_publish(exchange="recman.requests", routing_key="", body=json.dumps(body).encode(), properties=props)
    conn.close()
    print("published request", a.request_id, "for", ", ".join(a.targets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
