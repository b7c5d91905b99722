"""Training shards: writing them, and streaming them resumably into PyTorch."""

from egocurate import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, (
    "write: write_shards ShardParams; stream: ShardDataset; dreamdojo_sample: DreamDojoSample; manifest: "
    "read_manifest"
))
