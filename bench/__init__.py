"""The loader's throughput benchmark (``bench/run``): raw consumption vs a naive loader vs the worker.

One run produces a topic of realistic events once, then reads it three ways
(aiokafka's batch API with no decoding; a naive json.loads → pyarrow → S3
loader; the real stream worker as a subprocess) and prints events/s, MB/s,
the ratios and the worker's peak RSS. ``bench/run --scaling`` instead times the
worker alone over processes x partitions x event size (:mod:`bench.scaling`).
See the README's "Benchmark" section.
"""
