"""The event gateway (``loader gateway``): an HTTP front door that puts events on Kafka.

Apps and services post events over HTTP; the gateway checks them with the worker's own
decoder (what it accepts, the worker turns into rows), writes the envelope into Kafka
headers and produces with one tuned, idempotent producer per cluster.
"""
