"""The video data pipeline: manifests, temporal sampling, decoding (decord, PyAV, TorchCodec), transforms, datasets,
synthetic benchmark.

Import the submodules (``autovid.data.manifest`` ...); this package imports nothing at load time so that
probing child processes start quickly.
"""
