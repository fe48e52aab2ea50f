"""The event store on NATS JetStream.

One module per job:

- ``store``: ``JetStreamEventStore``, appends (optimistic concurrency, idempotent retries)
  and reads;
- ``_api``: the JetStream API subjects, one request, the error codes the store reacts to;
- ``_codec``: an event's message body, written and read back;
- ``_provisioning``: creating the stream, or refusing an unsafe one;
- ``_replies``: one inbox routing acknowledgements and batched direct gets;
- ``_puller``: the pull consumer behind ``read_all`` and ``subscribe``;
- ``_group_commit``: appends that meet in time leave as one atomic batch;
- ``_connection``: the store's own connection when given a URL.

The layout on the server, the traps of JetStream the store works around and its limits are
described in ``store``'s docstring and in docs/architecture.md.
"""

from __future__ import annotations

from micro.eventstore.jetstream.store import MAX_EVENTS_PER_APPEND, JetStreamEventStore

__all__ = ["MAX_EVENTS_PER_APPEND", "JetStreamEventStore"]
