"""S3 event notifications delivered through SQS: the queue and its dead-letter queue, the
buckets' notification rules (:mod:`~loader.notify.provision`), the receive / extend-visibility /
delete loop (:mod:`~loader.notify.queue`) and reading a message (:mod:`~loader.notify.message`).
The loaders consume notifications through it; they do not manage them."""

from __future__ import annotations
