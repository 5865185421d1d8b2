"""The video data pipeline: manifests, temporal sampling, decord decoding, transforms, datasets, synthetic benchmark.

Import the submodules (``autovid.data.manifest`` ...); this package imports nothing at load time so that
probing child processes start quickly.
"""
